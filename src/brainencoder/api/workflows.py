"""The commands as Python functions: prepare, train, evaluate, adapt, explore, compare, score.

Each calls the same library code as its command, with the same checks and
errors (:class:`~brainencoder.util.errors.BrainEncoderError` subclasses with
one-line messages), so a notebook and a shell script behave alike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..runs.run import Run

__all__ = [
    "adapt",
    "compare",
    "evaluate",
    "explore",
    "list_readouts",
    "list_trunks",
    "prepare",
    "score",
    "train",
]


def prepare(data: str | Path, store: str | Path, **options: Any):
    """Prepare a store from a challenge-layout folder (``brainencoder prepare``).

    Parameters
    ----------
    data : path
        The Algonauts 2023 layout (``subjXX/training_split/...``).
    store : path
        The new store folder.
    **options
        ``image_size``, ``subjects``, ``split_seed``, ``split_mode``, ``fmri_dtype``,
        ``nan_policy``, ``workers``, ``overwrite``
        (see :func:`brainencoder.data.prepare.prepare_store`).

    Returns
    -------
    Store

    Examples
    --------
    >>> store = be.prepare("algonauts_2023_challenge_data", "stores/challenge")  # doctest: +SKIP
    """
    from ..data.prepare import prepare_store

    options.setdefault("progress", False)
    return prepare_store(data, store, **options)


def _override_strings(overrides: Mapping[str, Any]) -> list[str]:
    """``{"lr": 1e-3, "model.readout": {"name": "point"}}`` -> ``["lr=0.001", ...]``."""
    return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]


def train(
    config: str | Path | None = None,
    store: str | Path | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    **kwargs: Any,
) -> Run:
    """Train an encoder (``brainencoder train``); returns the finished run.

    Parameters
    ----------
    config : path or str, optional
        A YAML file or a packaged config name (``"demo"``, ``"phase1"``, ``"phase2"``).
    store : path
        A prepared store.
    out : path
        The run folder.
    resume, overwrite : bool, default=False
    overrides : mapping or sequence of str, optional
        Dotted keys: ``{"model.readout.name": "point"}``, or the command line's
        ``["model.readout.name=point", "lr=1e-3"]``.
    **kwargs
        Top-level keys: ``epochs=5, lr=1e-3, model={"readout": {"name": "point"}}``.

    Returns
    -------
    Run
        ``run.summary()``, ``run.read_metrics()``, ``run.path``; ``be.load(run.path)``.

    Examples
    --------
    >>> run = be.train("demo", store="stores/demo", out="runs/p1", epochs=5)  # doctest: +SKIP
    """
    from ..training.config import load_config, resolve_config
    from ..training.loop import train as train_loop
    from ..util.errors import ConfigError

    if store is None or out is None:
        raise ConfigError("train needs store= (a prepared store) and out= (the run folder)")
    path = resolve_config(str(config)) if config is not None else None
    items = list(overrides) if overrides is not None and not isinstance(overrides, Mapping) else []
    mapping = dict(overrides) if isinstance(overrides, Mapping) else {}
    cfg = load_config(path, [*items, *_override_strings({**mapping, **kwargs})])
    train_loop(cfg, store, out, resume=resume, overwrite=overwrite, progress=False)
    return Run(out)


def evaluate(run: str | Path, split: str = "testval", **options: Any):
    """Per-vertex metrics of a run by ROI (``brainencoder evaluate``).

    Parameters
    ----------
    run : path
    split : {"val", "testval", "train", "all", "test"}, default="testval"
    **options
        ``store``, ``noise_ceiling``, ``out_dir`` (needed for a model file),
        ``trust_splits`` (see :func:`brainencoder.evaluation.evaluate.evaluate_run`).

    Returns
    -------
    pandas.DataFrame
        Columns subject, hemisphere, roi_group, roi, metric, statistic, n_vertices, value.

    Examples
    --------
    >>> table = be.evaluate("runs/p2", "testval")                # doctest: +SKIP
    >>> table.query("subject == 'all' and metric == 'pearson'")  # doctest: +SKIP
    """
    from ..evaluation.evaluate import evaluate_run

    return evaluate_run(run, split, **options)


def adapt(run: str | Path, data: str | Path, subject: str, out: str | Path, **options: Any) -> Run:
    """Add a new subject to a trained model from few images (``brainencoder adapt``).

    Parameters
    ----------
    run : path
        The trained run (any readout).
    data : path
        Challenge-layout folder or store holding ``subject``.
    subject : str
    out : path
        The new run folder.
    **options
        ``n_images``, ``seed``, ``overwrite``, ``overwrite_subject``, and training
        settings (``epochs``, ``lr``, ... of :class:`~brainencoder.experiments.adapt.AdaptConfig`).

    Returns
    -------
    Run

    Examples
    --------
    >>> run = be.adapt("runs/p2", "data", "subj09", "runs/p9", n_images=300)  # doctest: +SKIP
    >>> be.load(run.path).subjects[-1]                                       # doctest: +SKIP
    'subj09'
    """
    from ..experiments.adapt import AdaptConfig
    from ..experiments.adapt import adapt as adapt_subject
    from ..util.typecheck import from_mapping

    keys = {"n_images", "seed", "overwrite", "overwrite_subject"}
    direct = {k: v for k, v in options.items() if k in keys}
    settings = from_mapping(AdaptConfig, {k: v for k, v in options.items() if k not in keys})
    adapt_subject(run, data, subject, out, config=settings, **direct)
    return Run(out)


def explore(
    run: str | Path,
    images: str | Path,
    subject: str,
    rois: Sequence[str],
    out: str | Path,
    **options: Any,
) -> dict[str, Path]:
    """Rank images by predicted ROI response (``brainencoder explore``); returns the files.

    Examples
    --------
    >>> be.explore("runs/p2", "images/", "subj01", ["FFA-1", "PPA"], "faces")  # doctest: +SKIP
    """
    from ..experiments.explore import explore as explore_images

    return explore_images(run, images, subject, list(rois), out, **options)


def compare(runs: Sequence[Any], out: str | Path, **options: Any) -> dict[str, Path]:
    """Runs side by side with bootstrap intervals (``brainencoder compare``); returns the files.

    Examples
    --------
    >>> be.compare(["runs/p1", "runs/p2", ["runs/p1", "runs/p1b"]], "comparison")  # doctest: +SKIP
    """
    from ..evaluation.compare import compare_runs

    return compare_runs(list(runs), out, **options)


def score(submission: str | Path, truth: str | Path, data: str | Path | None = None) -> dict:
    """Challenge score of a submission zip against held-back responses (``brainencoder score``).

    Returns
    -------
    dict
        Mean score per subject, ``"all"`` (the leaderboard's number), ``"median"``, ...

    Examples
    --------
    >>> be.score("submission.zip", "synthetic/truth")["all"]      # doctest: +SKIP
    """
    from ..data.layout import read_layout
    from ..evaluation.submission import score_submission

    layout = read_layout(data) if data is not None else None
    return score_submission(submission, truth, layout)


def list_readouts() -> list[str]:
    """Names of the registered readouts (``model.readout.name=...``).

    Examples
    --------
    >>> be.list_readouts()                                        # doctest: +SKIP
    ['grouplin', 'grouplin_seq', 'point', 'roi_query']
    """
    from ..models.readouts import list_readouts as names

    return names()


def list_trunks(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Trunk names for ``model.trunk=...`` matching ``pattern``.

    timm's model names (``pretrained``: only those with pretrained weights), then
    the Hugging Face models in the local cache as ``hf:NAME`` (a folder written
    by ``save_pretrained`` is named ``hf:/path/to/folder``).

    Returns
    -------
    list of str

    Examples
    --------
    >>> be.list_trunks("eva02_base*")                             # doctest: +SKIP
    """
    import fnmatch

    import timm

    names = timm.list_models(pattern, pretrained=pretrained)
    try:
        from huggingface_hub import scan_cache_dir

        cached = sorted(r.repo_id for r in scan_cache_dir().repos if r.repo_type == "model")
    except Exception:  # no cache folder, or huggingface_hub missing: nothing cached
        cached = []
    return names + [f"hf:{n}" for n in cached if fnmatch.fnmatch(n, pattern)]
