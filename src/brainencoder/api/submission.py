"""A challenge submission as a Python function: submit.

Does the work of ``brainencoder submit`` (the command parses its options,
calls :func:`submit` and prints), with the same checks and one-line errors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from ..util.errors import ConfigError

__all__ = ["SubmissionResult", "submit"]

_WEIGHTINGS = ("vertex", "roi")  # submit's val_weights choices besides True / False


@dataclasses.dataclass(frozen=True)
class SubmissionResult:
    """What :func:`submit` wrote.

    Attributes
    ----------
    path : Path
        The zip.
    subjects : list of str
        The subjects it holds (``subjXX/{lh,rh}_pred_test.npy`` each).
    n_models : int
        Runs averaged (1: a single model).
    scores : dict of str to float, optional
        The challenge score against ``truth`` (``"all"`` is the leaderboard's
        number; see :func:`brainencoder.api.score`); None without ``truth``.
    """

    path: Path
    subjects: list[str]
    n_models: int
    scores: dict[str, float] | None = None


def _weighting(val_weights: bool | str) -> str | None:
    """The ``by`` of val-weighted ensembles (None: the plain mean), or a ConfigError."""
    if val_weights is False:
        return None
    if val_weights is True:
        return "vertex"
    if val_weights not in _WEIGHTINGS:
        raise ConfigError(
            f"'val_weights' must be False, True, 'vertex' or 'roi'; got {val_weights!r}"
        )
    return val_weights


def _check_workers(workers: int | None) -> None:
    """What the command's ``--workers`` parser accepts: None or an integer >= 0."""
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int) or workers < 0
    ):
        raise ConfigError(f"'workers' must be an integer >= 0; got {workers!r}")


def submit(
    runs: str | Path | Sequence[str | Path],
    *,
    data: str | Path,
    out: str | Path,
    store: str | Path | None = None,
    val_weights: bool | Literal["vertex", "roi"] = False,
    trust_splits: bool = False,
    truth: str | Path | None = None,
    workers: int | None = None,
) -> SubmissionResult:
    """Write a challenge submission zip; several runs: their ensemble (``brainencoder submit``).

    Predicts every subject's test images (rows in sorted test-image order, each
    subject's own challenge space), checks the shapes, and writes the zip
    atomically.

    Parameters
    ----------
    runs : path or sequence of path
        Run folders, model files, exported folders or ``"hf:ORG/NAME"`` (read
        from the local cache); several: the mean of their predictions.
    data : path
        The challenge data root (its test images and vertex masks).
    out : path
        The zip to write (must end in ``.zip``).
    store : path, optional
        The store whose val split chooses ``val_weights`` (default: the first run's).
    val_weights : bool or {"vertex", "roi"}, default=False
        Weight the ensemble's members by their val accuracy: per vertex (True or
        "vertex") or averaged per ROI ("roi"); False: the plain mean. Every run
        must have been trained without the val split.
    trust_splits : bool, default=False
        With ``val_weights``: accept runs that record no training splits.
    truth : path, optional
        Folder of held-back test responses and noise ceilings: the zip is then scored.
    workers : int, optional
        Threads decoding images while a model predicts (default: one per CPU; 0: none).

    Returns
    -------
    SubmissionResult
        ``path``, ``subjects``, ``n_models`` and, with ``truth``, ``scores``.

    Raises
    ------
    ConfigError
        A ``val_weights`` or ``workers`` the command would refuse.
    UnsafeOverwriteError
        ``out`` is a folder or does not end in .zip.
    DataError
        Test images missing, or a run's vertices other than the data's.

    Examples
    --------
    >>> result = be.submit(["runs/p1", "runs/p1b"], data="data", out="s.zip")  # doctest: +SKIP
    >>> result = be.submit("runs/p2", data="data", out="s.zip", truth="truth")  # doctest: +SKIP
    >>> result.scores["all"]                                                   # doctest: +SKIP
    """
    from ..data.layout import read_layout
    from ..evaluation.submission import (
        check_run_vertices,
        check_test_images,
        score_submission,
        write_submission,
    )
    from ..inference.images import ensemble_predict
    from ..runs.hub import resolve_source
    from ..runs.load import load_model
    from ..util.ownership import check_output_file

    by = _weighting(val_weights)
    _check_workers(workers)
    sources = [runs] if isinstance(runs, str | Path) else list(runs)
    if not sources:
        raise ConfigError("submit needs at least one run")
    sources = [resolve_source(r) for r in sources]  # hf:ORG/NAME: its folder
    check_output_file(out, (".zip",))
    layout = read_layout(data)
    check_test_images(layout)
    models = [load_model(r) for r in sources]
    for model, source in zip(models, sources):  # same counts are not the same vertices
        check_run_vertices(model.space, layout, source)
    weights = None
    if by is not None:
        from ..runs.ensemble import val_weights as choose_weights

        weights = choose_weights(models, sources, store, trust_splits=trust_splits, by=by)
    preds = {}
    for name, subj in layout.subjects.items():
        w = None if weights is None else [wm[name] for wm in weights]
        preds[name] = ensemble_predict(models, subj.test_images, name, w, workers=workers)
    write_submission(preds, layout, out)
    scores = None if truth is None else score_submission(out, truth, layout)
    return SubmissionResult(Path(out), list(preds), len(models), scores)
