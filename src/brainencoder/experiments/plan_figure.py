"""The picture ``plan`` writes beside its list: where the picked images lie in the pool.

``plan --out list.txt`` also writes ``list.png``: on the left, every pool
image in the plane of the first two principal components of the model's
predicted responses (grey), the picked ones in colour by pick order and the
first of them numbered; on the right, the first picked images themselves,
numbered alike. A person checks at a glance that the picks cover the pool's
spread (``cover``, ``kcenter``, ``dopt``) rather than one corner of it, and
what kind of images they are.

The PNG carries a text chunk naming ``brainencoder plan``: ``--overwrite``
replaces a picture beside the list only if ``plan`` wrote it, never a user's
own file of that name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..util.errors import BrainEncoderError

__all__ = ["check_figure", "figure_path", "write_figure"]

#: the PNG text chunk (key, value) that marks a picture ``plan`` wrote
_MARK = ("brainencoder", "plan")


def figure_path(out: Path) -> Path:
    """The picture beside the list: ``list.txt`` -> ``list.png``."""
    return out.with_suffix(".png")


def _written_by_plan(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.format == "PNG" and image.text.get(_MARK[0]) == _MARK[1]
    except (OSError, ValueError, SyntaxError):
        return False


def check_figure(path: Path, inputs: Sequence[Path | None], overwrite: bool) -> None:
    """Before any work: ``path`` may be written (new, or a picture of ``plan`` with ``overwrite``).

    Raises
    ------
    UnsafeOverwriteError
        ``path`` is a folder or a link, lies in an input, or is a file
        ``plan`` did not write.
    BrainEncoderError
        ``path`` exists and ``overwrite`` is false.
    """
    from ..util.ownership import UnsafeOverwriteError, check_output_file, check_output_location

    check_output_file(path, (".png",))
    check_output_location(path, inputs)
    if not (path.exists() or path.is_symlink()):
        return
    if not overwrite:
        raise BrainEncoderError(
            f"{path} exists (plan writes its picture beside --out); pass --overwrite to replace it"
        )
    if path.is_symlink() or not _written_by_plan(path):
        raise UnsafeOverwriteError(
            f"refusing to replace {path}: plan writes its picture there (beside --out) but did "
            "not write this file; choose another --out, or move this file yourself"
        )


def _explained(z: np.ndarray, total: float) -> list[float]:
    return [100.0 * float((z[:, k] ** 2).sum()) / max(total, 1e-12) for k in range(2)]


def _scatter(ax, z: np.ndarray, chosen: np.ndarray, total: float, numbered: int) -> None:
    share = _explained(z, total)
    ax.scatter(z[:, 0], z[:, 1], s=8, c="#c8c8c8", linewidths=0, label="pool")
    order = np.arange(1, chosen.size + 1)
    points = ax.scatter(
        z[chosen, 0], z[chosen, 1], s=26, c=order, cmap="viridis", edgecolors="k", linewidths=0.4
    )
    for rank, i in enumerate(chosen[:numbered]):
        ax.annotate(
            str(rank + 1), (z[i, 0], z[i, 1]), xytext=(3, 3), textcoords="offset points", fontsize=8
        )
    bar = ax.figure.colorbar(points, ax=ax, fraction=0.046, pad=0.02)
    bar.set_label("pick order")
    ax.set_xlabel(f"PC 1 of predicted responses ({share[0]:.0f}% of variance)")
    ax.set_ylabel(f"PC 2 ({share[1]:.0f}%)")


def write_figure(
    path: Path,
    z: np.ndarray,
    chosen: np.ndarray,
    thumbs: np.ndarray,
    total: float,
    title: str,
) -> Path:
    """Draw the pool, the picks and the first picked images; write ``path`` atomically.

    Parameters
    ----------
    path : Path
        A ``.png`` file (checked with :func:`check_figure` before any work).
    z : ndarray of shape (n_images, k)
        The pool's principal-component scores, ``k >= 2`` (one column is padded).
    chosen : ndarray of int, shape (n,)
        Picked rows of ``z``, in pick order.
    thumbs : ndarray of uint8, shape (m, H, W, 3)
        The first ``m <= n`` picked images.
    total : float
        The pool's total variance (sum of squares of the centred responses):
        each component's share in the axis labels.
    title : str

    Returns
    -------
    Path
    """
    import matplotlib.pyplot as plt

    from ..util.fileio import atomic_path

    if z.shape[1] < 2:
        z = np.concatenate([z, np.zeros((z.shape[0], 2 - z.shape[1]))], 1)
    cols = 4
    rows = max(1, -(-len(thumbs) // cols))
    fig = plt.figure(figsize=(11.0, 4.6))
    grid = fig.add_gridspec(rows, 1 + cols, width_ratios=[cols * 1.25] + [1.0] * cols)
    _scatter(fig.add_subplot(grid[:, 0]), z, chosen, total, numbered=len(thumbs))
    for k in range(rows * cols):
        ax = fig.add_subplot(grid[k // cols, 1 + k % cols])
        ax.axis("off")
        if k < len(thumbs):
            ax.imshow(thumbs[k])
            ax.set_title(str(k + 1), fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=80, format="png", metadata={_MARK[0]: _MARK[1]})
    plt.close(fig)
    return path
