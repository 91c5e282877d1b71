"""The data commands as Python functions: synth, validate, pca.

A synthetic dataset with planted truth, every problem of a data folder, and
the group PCA of a store: each does the work of its command (the command
parses its options, calls these and prints), with the same checks and
one-line errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..util.errors import ConfigError

if TYPE_CHECKING:
    from ..data.problems import ValidationReport
    from ..data.store import Store
    from ..data.synthetic import SyntheticConfig
    from ..models.pca import GroupPCA

__all__ = ["pca", "synth", "validate"]


def _flag(key: str, value: Any) -> bool:
    """``value`` if it is a bool, else a ConfigError naming ``key``."""
    if not isinstance(value, bool):
        raise ConfigError(f"'{key}' must be True or False; got {value!r}")
    return value


def synth(
    out: str | Path,
    *,
    config: SyntheticConfig | Mapping[str, Any] | None = None,
    layout: Literal["challenge", "simple"] = "challenge",
    repeats: int | None = None,
    images: Literal["folder", "npy"] | None = None,
) -> Path:
    """Write a synthetic dataset with planted truth (``brainencoder synth``).

    Parameters
    ----------
    out : path
        The new folder (refused if it holds files): ``subjXX/`` folders and
        ``truth/subjXX/{lh,rh}_{noise_ceiling,test_fmri,test_signal}.npy``.
    config : SyntheticConfig or mapping, optional
        Sizes, noise and seed: a :class:`~brainencoder.data.synthetic.SyntheticConfig`,
        or a mapping of its fields (``{"n_subjects": 3, "n_train": 300,
        "n_vertices": 1200, "held_out": 1, "categories": True}``; the command's
        ``--subjects``, ``--n-train``, ``--vertices``, ...), checked by name and
        type. Default: ``SyntheticConfig()``, the command's defaults.
    layout : {"challenge", "simple"}, default="challenge"
        The Algonauts 2023 layout, or your own experiment's (``trials.csv``,
        responses per trial; docs/own-data.md).
    repeats : int, optional
        ``layout="simple"`` only: trials per image, >= 1 (default 3).
    images : {"folder", "npy"}, optional
        ``layout="simple"`` only: image files in ``images/`` (default) or one ``images.npy``.

    Returns
    -------
    Path
        The dataset folder (its truth is in ``out / "truth"``).

    Raises
    ------
    ConfigError
        An unknown or ill-typed ``config`` key, or ``repeats``/``images`` with the
        challenge layout.
    BrainEncoderError
        Sizes out of range (``'n_train' leaves fewer than 20 training images ...``),
        or ``out`` is not empty.

    Examples
    --------
    >>> data = be.synth("synthetic", config={"n_train": 120, "n_vertices": 300})  # doctest: +SKIP
    >>> be.synth("mine", layout="simple", repeats=2)                            # doctest: +SKIP
    """
    from ..data.synthetic import SyntheticConfig, make_synthetic
    from ..data.synthetic_simple import make_synthetic_simple
    from ..util.typecheck import from_mapping

    if layout not in ("challenge", "simple"):
        raise ConfigError(f"'layout' must be 'challenge' or 'simple'; got {layout!r}")
    if layout == "challenge" and (repeats is not None or images is not None):
        raise ConfigError("--repeats and --images apply to --layout simple only")
    if repeats is not None and (
        isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1
    ):
        raise ConfigError(f"'repeats' must be an integer >= 1; got {repeats!r}")
    if images not in (None, "folder", "npy"):
        raise ConfigError(f"'images' must be 'folder' or 'npy'; got {images!r}")
    if config is None:
        config = SyntheticConfig()
    elif not isinstance(config, SyntheticConfig):
        config = from_mapping(SyntheticConfig, config)
    config.validate()
    if layout == "simple":
        return make_synthetic_simple(out, config, repeats or 3, images or "folder")
    return make_synthetic(out, config)


def validate(
    data: str | Path, *, check_images: bool = True, progress: bool = False
) -> ValidationReport:
    """Every problem of a dataset, by file (``brainencoder validate``).

    Parameters
    ----------
    data : path
        The challenge layout's data root (``subjXX/...``) or your own
        experiment's folder (``experiment.json``).
    check_images : bool, default=True
        Decode every image (the slowest check; the command's ``--skip-images`` is False).
    progress : bool, default=False
        Show a progress bar while images are checked.

    Returns
    -------
    ValidationReport
        ``report.problems`` (each names its file and says whether it blocks
        training), ``report.ok`` (nothing blocks), ``report.table()`` (one row
        per subject). A folder that cannot be read is a problem in the report,
        not an exception.

    Raises
    ------
    ConfigError
        ``check_images`` or ``progress`` is not a bool.

    Examples
    --------
    >>> report = be.validate("algonauts_2023_challenge_data")   # doctest: +SKIP
    >>> report.ok, [str(p) for p in report.problems]             # doctest: +SKIP
    """
    from ..data.validate import validate_dataset

    check_images = _flag("check_images", check_images)
    wrap = None
    if _flag("progress", progress):
        from tqdm.auto import tqdm

        def wrap(items, total):
            return tqdm(items, total=total, unit="img", desc="check images", disable=None)

    return validate_dataset(data, check_images=check_images, progress=wrap)


def pca(
    store: str | Path | Store,
    out: str | Path,
    *,
    components: int | Literal["auto"] = 2048,
    seed: int = 0,
) -> GroupPCA:
    """Fit and save the group PCA of a store's training fMRI (``brainencoder pca``).

    Parameters
    ----------
    store : path or Store
        A prepared store; the PCA reads its train rows of every subject.
    out : path
        The file to write (``.safetensors``; ``pca_file=`` of a training config reads it).
    components : int or "auto", default=2048
        Number of components, >= 1 and at most min(training rows, group
        vertices); "auto": as many as that allows, up to 2048.
    seed : int, default=0
        Seed of the randomized SVD, in [0, 2**32 - 1].

    Returns
    -------
    GroupPCA
        ``components`` (n_components, n_group_vertices), ``mean`` (n_group_vertices,),
        ``explained_variance`` (n_components,), ``n_samples``.

    Raises
    ------
    ConfigError
        ``components`` or ``seed`` out of range.
    UnsafeOverwriteError
        ``out`` is a folder.

    Examples
    --------
    >>> fitted = be.pca("stores/s", "runs/pca.safetensors", components=512)  # doctest: +SKIP
    >>> fitted.explained_variance.sum()                                     # doctest: +SKIP
    """
    from ..data.store import Store
    from ..models.pca import fit_group_pca
    from ..util.ownership import check_output_file
    from ..util.typecheck import check_seed

    if components != "auto" and (
        isinstance(components, bool) or not isinstance(components, int) or components < 1
    ):
        raise ConfigError(
            f"'components' must be a number of components >= 1 or 'auto'; got {components!r}"
        )
    seed = check_seed("seed", seed)
    check_output_file(out)
    fitted = fit_group_pca(
        store if isinstance(store, Store) else Store(store), components, seed=seed
    )
    fitted.save(out)
    return fitted
