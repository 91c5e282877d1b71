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
from .plan_select import SELECTORS, cover, dopt, kcenter, principal_scores, top_disagreement

__all__ = ["plan_images", "select"]

#: principal components of the predicted responses the rules compare images by
N_COMPONENTS = 32


def select(responses: np.ndarray, n: int, method: str, seed: int = 0) -> np.ndarray:
    """``n`` image indices chosen by ``method`` from the members' predicted responses.

    Parameters
    ----------
    responses : ndarray of shape (n_models, n_images, n_vertices)
        :func:`~.plan_features.pool_responses`.
    n : int
        At most ``n_images``.
    method : {"cover", "kcenter", "dopt", "disagreement", "random"}
    seed : int, default=0
        Of ``random`` and of ``cover``'s k-means start.

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
    z = principal_scores(responses.mean(0), N_COMPONENTS)
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
    """Before any work: a .txt file path, not over or inside an input; replaced if asked."""
    from ..util.ownership import check_output_file, check_output_location

    check_output_file(out, (".txt",))
    check_output_location(out, inputs)
    if out.exists() and not overwrite:
        raise BrainEncoderError(f"{out} exists; pass --overwrite to replace it")


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
    method: str = "cover",
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
        A ``.txt`` file: one image file name per line, in the order picked.
        It may not lie inside the pool or an input; an existing file is
        replaced only with ``overwrite``. Written atomically.
    method : {"cover", "kcenter", "dopt", "disagreement", "random"}, default="cover"
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
    from ..runs.hub import resolve_source
    from ..runs.load import load_model
    from ..runs.locate import read_files
    from ..util.fileio import write_bytes_atomic
    from ..util.typecheck import check_seed

    seed = check_seed("seed", seed)
    paths = [resolve_source(r) for r in runs]
    for p in paths:
        if not p.exists():
            raise DataError(f"{p}: no such run folder or model file")
    models = [m for p in paths for m in members(load_model(p))]
    _check(n, method, len(models))
    out = None if out is None else Path(out)
    if out is not None:
        inputs = [Path(pool), *(f for p in paths for f in read_files(p))]
        _check_out(out, inputs + ([Path(only[0])] if only else []), overwrite)
    with open_images(pool) as source:
        names = list(source.names)
        keep = np.arange(len(names))
        if only is not None:
            allowed = _train_names(*only)
            keep = np.array([i for i, name in enumerate(names) if name in allowed], np.int64)
        if n > keep.size:
            raise ConfigError(f"--n {n} is more than the {keep.size} images of the pool {pool}")
        responses = pool_responses(models, _Subset(source, keep), seed=seed)
    chosen = [names[i] for i in keep[select(responses, n, method, seed)]]
    if out is not None:
        write_bytes_atomic(out, ("\n".join(chosen) + "\n").encode())
    return chosen


class _Subset:
    """Some images of a source, re-indexed from 0 (``len`` and ``load``)."""

    def __init__(self, source, rows: np.ndarray) -> None:
        self.source, self.rows = source, rows

    def __len__(self) -> int:
        return int(self.rows.size)

    def load(self, index: int, size: int | None = None) -> np.ndarray:
        return self.source.load(int(self.rows[index]), size)
