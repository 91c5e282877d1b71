"""The commands as Python functions: prepare, train, evaluate, adapt, explore, compare, score.

Each calls the same library code as its command, with the same checks and
errors (:class:`~brainencoder.util.errors.BrainEncoderError` subclasses with
one-line messages), so a notebook and a shell script behave alike. Every
option is an explicit keyword argument (``help(be.train)`` lists them);
adapt, explore and compare live in :mod:`brainencoder.api.experiments`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..runs.run import Run
from ..util.errors import ConfigError
from .experiments import adapt, compare, explore

if TYPE_CHECKING:
    import pandas as pd

    from ..data.store import Store

__all__ = [
    "adapt",
    "compare",
    "evaluate",
    "explore",
    "list_encoders",
    "list_readouts",
    "list_trunks",
    "prepare",
    "score",
    "train",
]


_SPLITS = ("val", "testval", "train", "all", "test")  # evaluate's choices


def _count(key: str, value: Any) -> None:
    """A ConfigError unless ``value`` is an integer >= 1 (what the command's parser checks)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"'{key}' must be an integer >= 1; got {value!r}")


def prepare(
    data: str | Path,
    store: str | Path,
    *,
    image_size: int = 256,
    fmri_dtype: Literal["float32", "float16"] = "float32",
    nan_policy: Literal["error", "zero"] = "error",
    split_seed: int = 0,
    split_mode: Literal["image", "subject"] = "image",
    subjects: Sequence[str] | None = None,
    workers: int | None = None,
    noise_ceiling: bool | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Store:
    """Prepare a store from a challenge-layout or own-experiment folder (``brainencoder prepare``).

    Parameters
    ----------
    data : path
        The Algonauts 2023 layout (``subjXX/training_split/...``), or the simple
        layout of your own experiment (``experiment.json``, per subject images,
        ``trials.csv`` and responses; see docs/own-data.md).
    store : path
        The new store folder.
    image_size : int, default=256
        Side of the stored square images, in [16, 1024].
    fmri_dtype : {"float32", "float16"}, default="float32"
    nan_policy : {"error", "zero"}, default="error"
        NaN or inf in the fMRI: an error naming the file and row, or 0.
    split_seed : int, default=0
        Seed of the train/val/testval split saved in the store.
    split_mode : {"image", "subject"}, default="image"
        "image": an image shown to several subjects is in one split for all;
        "subject": each subject's images are split on their own (the original entry).
    subjects : sequence of str, optional
        A subset of the subjects (default: all).
    workers : int, optional
        Decoding processes, >= 1 (default: all cores).
    noise_ceiling : bool, optional
        Simple layout only: estimate noise ceilings from repeated trials (True:
        required; False: never; default: when every subject has repeats).
    overwrite : bool, default=False
        Replace a store prepared from other data or with other options.
    progress : bool, default=False
        Show a progress bar.

    Returns
    -------
    Store
        The opened, complete store (see :func:`brainencoder.data.prepare.prepare_store`).

    Examples
    --------
    >>> store = be.prepare("algonauts_2023_challenge_data", "stores/challenge")  # doctest: +SKIP
    >>> one = be.prepare("data", "stores/s", image_size=128, subjects=["subj01"])  # doctest: +SKIP
    """
    from ..data.prepare import PrepareOptions, prepare_store

    if workers is not None:
        _count("workers", workers)
    options = PrepareOptions(
        image_size=image_size,
        fmri_dtype=fmri_dtype,
        nan_policy=nan_policy,
        split_seed=split_seed,
        split_mode=split_mode,
        noise_ceiling=noise_ceiling,
    )
    return prepare_store(
        data,
        store,
        options,
        subjects=None if subjects is None else list(subjects),
        workers=workers,
        overwrite=overwrite,
        progress=progress,
    )


def train(
    config: str | Path | None = None,
    *,
    store: str | Path | None = None,
    out: str | Path | None = None,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> Run:
    """Train an encoder (``brainencoder train``); returns the finished run.

    Parameters
    ----------
    config : path or str, optional
        A YAML file or a packaged config name (``"demo"``, ``"phase1"``, ``"phase2"``);
        default: the defaults of :class:`~brainencoder.training.config.TrainConfig`.
    store : path
        A prepared store (required).
    out : path
        The run folder (required).
    overrides : mapping or sequence of str, optional
        Config keys over the file's, dotted or nested, values as they are:
        ``{"lr": 1e-3, "model.readout.name": "point"}``; or the command line's
        ``["lr=1e-3", "model.readout.name=point"]``. Every key is a field of
        :class:`~brainencoder.training.config.TrainConfig`, checked as on the command line.
    resume : bool, default=False
        Continue the run in ``out``.
    overwrite : bool, default=False
        Replace the run in ``out``.

    Returns
    -------
    Run
        ``run.summary()``, ``run.read_metrics()``, ``run.path``; ``be.load(run.path)``.

    Examples
    --------
    >>> run = be.train("demo", store="stores/demo", out="runs/p1",
    ...                overrides={"epochs": 5, "model.readout.name": "point"})  # doctest: +SKIP
    """
    from ..training.config import load_config, resolve_config
    from ..training.loop import train as train_loop

    if store is None or out is None:
        raise ConfigError("train needs store= (a prepared store) and out= (the run folder)")
    path = resolve_config(config) if config is not None else None
    cfg = load_config(path, overrides)
    train_loop(cfg, store, out, resume=resume, overwrite=overwrite, progress=False)
    return Run(out)


def evaluate(
    run: str | Path,
    split: Literal["val", "testval", "train", "all", "test"] = "testval",
    *,
    store: str | Path | Store | None = None,
    noise_ceiling: str | Path | None = None,
    out_dir: str | Path | None = None,
    trust_splits: bool = False,
) -> pd.DataFrame:
    """Per-vertex metrics of a run by ROI (``brainencoder evaluate``).

    Parameters
    ----------
    run : path
        A run folder (any kind) or a model file.
    split : {"val", "testval", "train", "all", "test"}, default="testval"
        "test" scores the test images against held-back responses in ``noise_ceiling``.
    store : path or Store, optional
        Default: the store the run was trained on (a model file needs it).
    noise_ceiling : path, optional
        Folder with ``subjXX/{lh,rh}_noise_ceiling.npy``: adds the challenge score.
    out_dir : path, optional
        Where the tables go; default ``run/eval/<split>`` (a model file needs it).
    trust_splits : bool, default=False
        Score a model that records no training splits on val or testval.

    Returns
    -------
    pandas.DataFrame
        Columns subject, hemisphere, roi_group, roi, metric, statistic, n_vertices, value
        (see :func:`brainencoder.evaluation.evaluate.evaluate_run`).

    Examples
    --------
    >>> table = be.evaluate("runs/p2", "testval")                # doctest: +SKIP
    >>> table.query("subject == 'all' and metric == 'pearson'")  # doctest: +SKIP
    """
    from ..evaluation.evaluate import evaluate_run

    if split not in _SPLITS:
        raise ConfigError(f"'split' must be one of {list(_SPLITS)}; got {split!r}")
    return evaluate_run(
        run,
        split,
        store=store,
        noise_ceiling=noise_ceiling,
        out_dir=out_dir,
        trust_splits=trust_splits,
    )


def score(
    submission: str | Path, truth: str | Path, *, data: str | Path | None = None
) -> dict[str, float]:
    """Challenge score of a submission zip against held-back responses (``brainencoder score``).

    Parameters
    ----------
    submission : path
        The zip (``subjXX/lh_pred_test.npy`` ...).
    truth : path
        Folder with ``subjXX/{lh,rh}_test_fmri.npy`` and ``{lh,rh}_noise_ceiling.npy``.
    data : path, optional
        Challenge data root: also checks the shapes against it.

    Returns
    -------
    dict of str to float
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


def list_encoders() -> list[str]:
    """Names of the registered encoder presets (``encoder: NAME`` in a training config).

    Plugins add their own (:func:`~brainencoder.models.presets.register_encoder`);
    ``model.*`` keys override single fields of the preset.

    Examples
    --------
    >>> be.list_encoders()                                        # doctest: +SKIP
    ['eva02_base', 'tiny', 'tiny_pair']
    """
    from ..models.presets import ENCODERS

    return ENCODERS.names()


def list_trunks(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Trunk names for ``model.trunk=...`` matching ``pattern``.

    The names every registered trunk family lists
    (:func:`~brainencoder.models.trunk.list_trunk_names`): timm's model names
    first (``pretrained``: only those with pretrained weights), then the Hugging
    Face models in the local cache as ``hf:NAME`` (a folder written by
    ``save_pretrained`` is named ``hf:/path/to/folder``), then a plugin
    family's.

    Returns
    -------
    list of str

    Examples
    --------
    >>> be.list_trunks("eva02_base*")                             # doctest: +SKIP
    """
    from ..models.trunk import list_trunk_names

    return list_trunk_names(pattern, pretrained)
