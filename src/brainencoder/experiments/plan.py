"""``brainencoder plan``: which images of a pool to show a new subject, for ``adapt``.

The model (one run, or an ensemble of runs) predicts the average subject's
response to every image of the pool (:mod:`.plan_features`); the images are
compared by the leading principal components of those predictions, and a
selection rule of :mod:`.plan_select` picks ``N`` of them. The list, one image
file name per line in the order picked, is what ``adapt --images`` reads. With
``store`` and ``subject`` the pool is first limited to the subject's
train-split images, the only ones ``adapt`` trains on (its val and test-val
images are kept for evaluation). What each rule gains over random images is
measured by ``benchmarks/adapt_plan.py`` (docs/in-silico.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.sources import open_images
from ..util.errors import BrainEncoderError, ConfigError, DataError
from .plan_features import members, pool_responses
from .plan_figure import check_figure, figure_path, write_figure
from .plan_select import SELECTORS, cover, dopt, kcenter, principal_scores, top_disagreement

__all__ = ["plan_images", "pool_scores", "select"]

#: principal components of the predicted responses the rules compare images by
N_COMPONENTS = 32


def pool_scores(responses: np.ndarray) -> np.ndarray:
    """What the rules compare images by: the leading principal components of the mean prediction.

    Parameters
    ----------
    responses : ndarray of shape (n_models, n_images, n_vertices)

    Returns
    -------
    ndarray of float64, shape (n_images, k)
        ``k = min(N_COMPONENTS, n_images, n_vertices)``.
    """
    return principal_scores(responses.mean(0), N_COMPONENTS)


def select(
    responses: np.ndarray, n: int, method: str, seed: int = 0, z: np.ndarray | None = None
) -> np.ndarray:
    """``n`` image indices chosen by ``method`` from the members' predicted responses.

    Parameters
    ----------
    responses : ndarray of shape (n_models, n_images, n_vertices)
        :func:`~.plan_features.pool_responses`.
    n : int
        At most ``n_images``.
    method : {"dopt", "cover", "kcenter", "disagreement", "random"}
    seed : int, default=0
        Of ``random`` and of ``cover``'s k-means start.
    z : ndarray of shape (n_images, k), optional
        :func:`pool_scores` of ``responses``, if already computed.

    Returns
    -------
    ndarray of int64, shape (n,)
        In the order picked.
    """
    if method == "random":
        rng = np.random.default_rng(np.random.SeedSequence([seed, 41]))
        return rng.choice(responses.shape[1], size=n, replace=False).astype(np.int64)
    if method == "disagreement":
        return top_disagreement(responses.var(0).mean(1), n)
    z = pool_scores(responses) if z is None else z
    if method == "kcenter":
        return kcenter(z, n)
    if method == "dopt":
        return dopt(z, n)
    return cover(z, n, seed)


def _check(n: int, method: str, n_members: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"--n must be an integer >= 1; got {n!r}")
    if method not in SELECTORS:
        raise ConfigError(f"--method must be one of {', '.join(SELECTORS)}; got {method!r}")
    if method == "disagreement" and n_members < 2:
        raise ConfigError(
            "--method disagreement needs an ensemble: pass two or more runs (seeds or readouts)"
        )


def _check_out(out: Path, inputs: Sequence[Path | None], overwrite: bool) -> None:
    """Before any work: a .txt file path, not over or inside an input; replaced if asked.

    The same for the picture beside it (:func:`~.plan_figure.check_figure`).
    """
    from ..util.ownership import check_output_file, check_output_location

    check_output_file(out, (".txt",))
    check_output_location(out, inputs)
    if out.exists() and not overwrite:
        raise BrainEncoderError(f"{out} exists; pass --overwrite to replace it")
    check_figure(figure_path(out), inputs, overwrite)


def _train_names(store: str | Path, subject: str) -> set[str]:
    from ..data.store import Store
    from .adapt_images import train_split_names

    opened = Store(store)
    if subject not in opened.names:
        raise DataError(f"{store}: no {subject} (subjects in the store: {', '.join(opened.names)})")
    return set(train_split_names(opened, subject))


def plan_images(
    runs: Sequence[str | Path],
    pool: str | Path,
    n: int,
    out: str | Path | None = None,
    method: str = "dopt",
    seed: int = 0,
    only: tuple[str | Path, str] | None = None,
    overwrite: bool = False,
) -> list[str]:
    """Pick ``n`` images of ``pool`` for a new subject; write their names to ``out``.

    Parameters
    ----------
    runs : sequence of path
        Run folders, model files or exported folders (or ``hf:ORG/NAME``); several:
        an ensemble (``disagreement`` needs one).
    pool : path
        A folder of images, or uint8 images in a ``.npy`` or HDF5 file.
    n : int
        How many to pick (at most the pool's size).
    out : path, optional
        A ``.txt`` file: one image file name per line, in the order picked;
        beside it, the picture of :mod:`.plan_figure` (``list.txt`` ->
        ``list.png``). Neither may lie inside the pool or an input; an
        existing list is replaced only with ``overwrite``, an existing
        picture only with ``overwrite`` and if ``plan`` wrote it. Written
        atomically.
    method : {"dopt", "cover", "kcenter", "disagreement", "random"}, default="dopt"
    seed : int, default=0
    only : (path, str), optional
        A store and a subject: keep only the pool images of that subject's
        train split (what ``adapt`` trains on).
    overwrite : bool, default=False

    Returns
    -------
    list of str
        The chosen file names, in the order picked.
    """
    from ..runs.locate import read_files
    from ..util.fileio import write_bytes_atomic
    from ..util.typecheck import check_seed

    seed = check_seed("seed", seed)
    paths, models = _load(runs)
    _check(n, method, len(models))
    out = None if out is None else Path(out)
    if out is not None:
        inputs = [Path(pool), *(f for p in paths for f in read_files(p))]
        _check_out(out, inputs + ([Path(only[0])] if only else []), overwrite)
    with open_images(pool) as source:
        names = list(source.names)
        keep = _kept_rows(names, pool, n, only)
        subset = _Subset(source, keep)
        responses = pool_responses(models, subset, seed=seed)
        z = None if method in ("random", "disagreement") and out is None else pool_scores(responses)
        picked = select(responses, n, method, seed, z)
        thumbs = None if out is None else _thumbnails(subset, picked[:_SHOWN])
    chosen = [names[i] for i in keep[picked]]
    if out is not None:
        total = float(((responses.mean(0) - responses.mean((0, 1))) ** 2).sum())
        title = f"plan --method {method}: {n} of {keep.size} images of {Path(pool).name}"
        write_figure(figure_path(out), z, picked, thumbs, total, title)
        write_bytes_atomic(out, ("\n".join(chosen) + "\n").encode())
    return chosen


#: how many picked images the picture shows (numbered in the scatter too)
_SHOWN = 12


def _load(runs: Sequence[str | Path]) -> tuple[list[Path], list]:
    """The runs' paths (each must exist) and the members of their models."""
    from ..runs.hub import resolve_source
    from ..runs.load import load_model

    paths = [resolve_source(r) for r in runs]
    for p in paths:
        if not p.exists():
            raise DataError(f"{p}: no such run folder or model file")
    return paths, [m for p in paths for m in members(load_model(p))]


def _kept_rows(names: list[str], pool, n: int, only) -> np.ndarray:
    """The pool rows ``plan`` chooses from (the subject's train split with ``only``)."""
    keep = np.arange(len(names))
    if only is not None:
        allowed = _train_names(*only)
        keep = np.array([i for i, name in enumerate(names) if name in allowed], np.int64)
    if n > keep.size:
        raise ConfigError(f"--n {n} is more than the {keep.size} images of the pool {pool}")
    return keep


def _thumbnails(subset: _Subset, rows: np.ndarray, size: int = 96) -> np.ndarray:
    """uint8 (len(rows), size, size, 3): the picked images, for the picture."""
    return np.stack([subset.load(int(i), size) for i in rows])


class _Subset:
    """Some images of a source, re-indexed from 0 (``len`` and ``load``)."""

    def __init__(self, source, rows: np.ndarray) -> None:
        self.source, self.rows = source, rows

    def __len__(self) -> int:
        return int(self.rows.size)

    def load(self, index: int, size: int | None = None) -> np.ndarray:
        return self.source.load(int(self.rows[index]), size)
