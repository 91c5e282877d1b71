"""Opening trained runs (encoder runs and baseline runs share one shape)."""

from __future__ import annotations

from pathlib import Path

from .errors import CheckpointError, DataError
from .fileio import read_yaml_mapping
from .train.checkpoint import RunDir

__all__ = [
    "check_run_store",
    "load_run_model",
    "run_history",
    "run_model_file",
    "run_store_path",
]


def _run_header(run_dir: Path) -> dict:
    path = run_dir / "config.yaml"
    if not path.exists():
        raise CheckpointError(f"{run_dir}: no config.yaml; not a run directory (pass --store)")
    try:
        header = read_yaml_mapping(path, "run config").get("run", {})
    except DataError as exc:
        raise CheckpointError(f"{exc}; pass --store STORE") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: damaged run header; pass --store STORE")
    return header


def run_store_path(run_dir: str | Path) -> Path:
    """The store a run was trained on (from its ``config.yaml``)."""
    run_dir = Path(run_dir)
    header = _run_header(run_dir)
    if not isinstance(header.get("store"), str):
        raise CheckpointError(f"{run_dir / 'config.yaml'}: no store recorded; pass --store")
    path = Path(header["store"])
    if not path.exists():
        raise CheckpointError(
            f"{run_dir}: the store it was trained on, {path}, is gone (moved or deleted); "
            "pass --store NEW_PATH"
        )
    return path


def check_run_store(run_dir: str | Path, store) -> None:
    """Refuse a store that is not the run's: other data, image size, splits or vertex space.

    Runs written before stores had an identity are checked on subjects only
    (by the caller).
    """
    run_dir = Path(run_dir)
    try:
        recorded = _run_header(run_dir).get("store_identity")
    except CheckpointError:
        return  # a bare model file: nothing recorded to compare
    if not isinstance(recorded, dict):
        return
    actual = store.identity()
    differs = [
        k for k in ("fingerprint", "image_size", "splits", "space") if recorded.get(k) != actual[k]
    ]
    if differs:
        what = {
            "fingerprint": "data",
            "image_size": "image size",
            "splits": "splits",
            "space": "vertex space",
        }
        raise CheckpointError(
            f"{store.path} is not the store {run_dir} was trained on (other "
            f"{', '.join(what[k] for k in differs)}); its numbers would be wrong. Pass the "
            "run's store with --store"
        )


def run_model_file(run_or_file: str | Path) -> Path:
    """The model file of a run directory (ridge, else best, else latest) or the file itself."""
    path = Path(run_or_file)
    if path.is_dir():
        ridge = path / "ridge.safetensors"
        path = ridge if ridge.exists() else RunDir(path).model_file()
    return path


def load_run_model(run_or_file: str | Path):
    """The model of a run directory (best, else latest) or of a model file.

    Returns an :class:`~brainencoder.models.encoder.Encoder` or a
    :class:`~brainencoder.baselines.ridge.RidgeModel`, both with ``space``,
    ``predict(images, subject)`` and ``store_image_size``.
    """
    path = run_model_file(run_or_file)
    if path.name.startswith("ridge"):
        from .baselines.ridge import RidgeModel

        return RidgeModel.load(path)
    from .models.modelfile import load_encoder

    return load_encoder(path)


def run_history(run_dir: str | Path, max_depth: int = 16) -> list[tuple[Path, list[dict]]]:
    """A run's training records preceded by those of the runs it was initialized from.

    Follows ``init_from`` (a run folder, or a model file inside one) back while
    the source run still exists, oldest first, so phase 2's learning curves
    show phase 1's epochs too. Loops and missing runs end the chain.

    Returns
    -------
    list of (run folder, records of its ``metrics.jsonl``)
    """
    chain: list[tuple[Path, list[dict]]] = []
    seen: set[Path] = set()
    current: Path | None = Path(run_dir)
    while current is not None and len(chain) < max_depth:
        resolved = current.resolve()
        if resolved in seen or not (current / "config.yaml").exists():
            break
        seen.add(resolved)
        chain.append((current, RunDir(current).read_metrics()))
        try:
            config = read_yaml_mapping(current / "config.yaml", "run config")
        except DataError:
            break
        source = config.get("init_from")
        if not isinstance(source, str) or not source:
            break
        source_path = Path(source)
        current = source_path if source_path.is_dir() else source_path.parent
    return chain[::-1]
