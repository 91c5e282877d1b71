"""Models made without training an encoder, as Python functions: baseline, soup, import_original.

A ridge or devkit baseline on frozen features, a weight soup of fine-tuned
runs, and a checkpoint of the original GroupLin entry as a model file: each
does the work of its command (the command parses its options, calls these
and prints), with the same checks and one-line errors.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..runs.run import Run
from ..util.errors import CheckpointError, ConfigError
from .model import Model

if TYPE_CHECKING:
    from ..baselines.ridge import FeatureSpec
    from ..core.space import GroupSpace

__all__ = ["baseline", "import_original", "soup"]

# the keys of import_original's ``model`` mapping and their types
_ORIGINAL_KEYS = {
    "trunk": str,
    "layers": list[int | str] | None,
    "trunk_weights": str | None,
    "img_size": int | None,
}


def _baseline_spec(
    kind: str, features: FeatureSpec | Mapping[str, Any] | None, solver: str | None
) -> tuple[FeatureSpec, str]:
    """The features and solver of a ``kind`` baseline, checked as the command checks them."""
    from ..baselines.ridge import FeatureSpec
    from ..util.typecheck import from_mapping

    if kind not in ("ridge", "devkit"):
        raise ConfigError(f"'kind' must be 'ridge' or 'devkit'; got {kind!r}")
    if features is None:
        spec = FeatureSpec()
    elif isinstance(features, FeatureSpec):
        spec = features
    else:
        spec = from_mapping(FeatureSpec, features, "features.")
    if kind == "ridge":
        return spec, "torch" if solver is None else solver
    # the Algonauts 2023 tutorial's model: PCA (100) of the last chosen layer's mean + OLS
    if spec.kind != "trunk":
        raise ConfigError(
            f"the devkit baseline regresses on trunk features; got features kind {spec.kind!r} "
            "(pixels are for the ridge baseline)"
        )
    if solver not in (None, "ols"):
        raise ConfigError(f"the devkit baseline solves by 'ols'; got solver {solver!r}")
    spec = dataclasses.replace(
        spec, layers=spec.layers[-1:], pooling="mean", pca_components=spec.pca_components or 100
    )
    return spec, "ols"


def baseline(
    kind: Literal["ridge", "devkit"],
    *,
    store: str | Path,
    out: str | Path,
    features: FeatureSpec | Mapping[str, Any] | None = None,
    solver: str | None = None,
    overwrite: bool = False,
) -> Run:
    """Fit a ridge or devkit baseline on frozen features (``brainencoder baseline``).

    The baseline is a run folder like an encoder's: ``be.evaluate``, ``be.load``,
    ``be.submit`` read it unchanged.

    Parameters
    ----------
    kind : {"ridge", "devkit"}
        "ridge": per-vertex ridge, alpha by 5-fold CV, on pooled features of
        the chosen layers (or pixels). "devkit": the Algonauts 2023 tutorial's
        model, PCA (100 components unless ``pca_components`` says otherwise) of
        the mean-pooled last chosen layer and ordinary least squares.
    store : path
        A prepared store; fitted on its train split.
    out : path
        The new run folder.
    features : FeatureSpec or mapping, optional
        The features: a :class:`~brainencoder.models.extractor.FeatureSpec`, or a
        mapping of its fields checked by name and type (``{"kind": "pixels"}``,
        ``{"trunk": "resnet18", "layers": ["layer2"], "img_size": 64}``; the
        command's ``--features``, ``--trunk``, ``--layers``, ``--pooling``, ...).
        Default: ``FeatureSpec()``, the command's defaults.
    solver : str, optional
        A registered ridge solver (``"torch"``, ``"himalaya"``, ``"sklearn"``,
        or a plugin's); default "torch" for "ridge"; "devkit" always solves by "ols".
    overwrite : bool, default=False
        Replace a run brainencoder wrote in ``out``.

    Returns
    -------
    Run
        The baseline's run folder (``run.path``; ``be.evaluate(run.path)``).

    Raises
    ------
    ConfigError
        An unknown kind, feature key or solver (the registered ones are listed).
    CheckpointError
        ``out`` holds a run and ``overwrite`` is not set.

    Examples
    --------
    >>> ridge = be.baseline("ridge", store="stores/demo", out="runs/ridge")      # doctest: +SKIP
    >>> pixels = be.baseline("ridge", store="stores/demo", out="runs/pixels",
    ...                      features={"kind": "pixels", "pixel_size": 32})      # doctest: +SKIP
    >>> be.evaluate(ridge.path, "testval")                                       # doctest: +SKIP
    """
    from ..baselines.ridge import RidgeOptions, fit_ridge_baseline
    from ..data.store import Store

    spec, solver = _baseline_spec(kind, features, solver)
    fit_ridge_baseline(Store(store), out, spec, RidgeOptions(solver), overwrite=overwrite)
    return Run(out)


def soup(
    runs: Sequence[str | Path],
    *,
    out: str | Path,
    uniform: bool = False,
    store: str | Path | None = None,
    overwrite: bool = False,
    trust_splits: bool = False,
) -> dict[str, Any]:
    """Average the weights of runs fine-tuned from one model (``brainencoder soup``).

    Parameters
    ----------
    runs : sequence of path
        Two or more compatible encoder runs (or model files).
    out : path
        The new run folder.
    uniform : bool, default=False
        Average every run; default: the greedy soup (runs added best first while
        the val score does not drop).
    store : path, optional
        The store whose val split scores the ingredients (default: the first run's).
    overwrite : bool, default=False
        Replace a run brainencoder wrote in ``out``.
    trust_splits : bool, default=False
        Accept ingredients that record no training splits as held out on val.

    Returns
    -------
    dict
        What ``out/soup.json`` holds: ``kind`` ("greedy" or "uniform"),
        ``ingredients`` (each ``run`` and its ``val`` median r²), ``kept``, ``val``
        (the soup's) and ``best_ingredient_val``.

    Raises
    ------
    ConfigError
        Fewer than two runs, ridge runs, or runs of other shapes.
    DataError
        A run trained on the val split.

    Examples
    --------
    >>> summary = be.soup(["runs/ft0", "runs/ft1", "runs/ft2"], out="runs/soup")  # doctest: +SKIP
    >>> summary["kept"], summary["val"]                                           # doctest: +SKIP
    """
    from ..runs.soup import soup_runs

    if isinstance(runs, str | Path):
        raise ConfigError("a soup needs at least two runs; pass a list of run folders")
    return soup_runs(
        list(runs),
        out,
        greedy=not uniform,
        store=store,
        overwrite=overwrite,
        trust_splits=trust_splits,
    )


def _group_space(data: Path) -> GroupSpace:
    """The group space of a prepared store or a challenge-layout folder."""
    from ..core.space import GroupSpace
    from ..data.layout import read_layout
    from ..data.store import Store

    if (data / "space.npz").exists():
        return Store(data).space
    layout = read_layout(data)
    return GroupSpace.from_masks({n: s.masks for n, s in layout.subjects.items()})


def _original_options(model: Mapping[str, Any] | None) -> dict[str, Any]:
    """``model`` checked by name and type; the original's trunk where it says nothing."""
    from ..models.original import ORIGINAL_TRUNK
    from ..util.typecheck import check_type

    model = {} if model is None else model
    if not isinstance(model, Mapping):
        raise ConfigError(f"'model' must be a mapping; got {model!r}")
    unknown = sorted(set(model) - set(_ORIGINAL_KEYS))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown}; valid: {sorted(_ORIGINAL_KEYS)}")
    options = {"trunk": ORIGINAL_TRUNK, "layers": None, "trunk_weights": None, "img_size": None}
    for key, value in model.items():
        value = os.fspath(value) if isinstance(value, os.PathLike) else value
        options[key] = check_type(f"model.{key}", value, _ORIGINAL_KEYS[key])
    if options["img_size"] is not None and options["img_size"] < 1:
        raise ConfigError(f"'model.img_size' must be >= 1; got {options['img_size']!r}")
    return options


def import_original(
    checkpoint: str | Path,
    *,
    data: str | Path,
    out: str | Path,
    pca: str | Path | None = None,
    model: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Model:
    """The original GroupLin entry's checkpoint as a model file (``brainencoder import-original``).

    Parameters
    ----------
    checkpoint : path
        ``ckpt-best.pt`` (or ``ckpt-last.pt``) of the original's training script.
    data : path
        The challenge data root or a store: its group space must be the checkpoint's.
    out : path
        The model file to write (``.safetensors``).
    pca : path, optional
        The original's ``group_pca_d-*.pt``: checked against the checkpoint's embedding.
    model : mapping, optional
        The trunk the checkpoint was trained with: ``"trunk"`` (a timm name, default
        ``"eva02_base_patch14_224.mim_in22k"``), ``"layers"`` (indices or globs,
        default ``["blocks.[02468]", "blocks.10"]``), ``"trunk_weights"`` (a local
        pretrained file, for a phase-1 checkpoint) and ``"img_size"`` (default: the
        trunk's); the command's ``--trunk``, ``--layers``, ``--trunk-weights``, ``--img-size``.
    overwrite : bool, default=False
        Replace ``out`` if it exists.

    Returns
    -------
    Model
        The imported model (``model.path`` is ``out``), ready to ``predict``.

    Raises
    ------
    ConfigError
        An unknown or ill-typed ``model`` key.
    CheckpointError
        ``out`` exists without ``overwrite``, or the checkpoint does not fit the
        data's group space or the trunk.
    UnsafeOverwriteError
        ``out`` is a folder or does not end in .safetensors.

    Examples
    --------
    >>> model = be.import_original("ckpt-best.pt", data="data", out="gl.safetensors",
    ...                            model={"trunk_weights": "eva02.safetensors"})  # doctest: +SKIP
    >>> model.predict("data/subj01/test_split/test_images", subject="subj01")     # doctest: +SKIP
    """
    from ..models.modelfile import save_encoder
    from ..models.original import import_original as convert
    from ..util.ownership import check_output_file

    options = _original_options(model)
    out = Path(out)
    check_output_file(out, (".safetensors",))
    if out.exists() and not overwrite:
        raise CheckpointError(f"{out} exists; pass --overwrite to replace it")
    encoder = convert(checkpoint, _group_space(Path(data)), pca=pca, **options)
    save_encoder(encoder, out, {"imported_from": Path(checkpoint).name})
    return Model(encoder, out)
