"""Opening trained runs (encoder runs and baseline runs share one shape)."""

from __future__ import annotations

from pathlib import Path

from .errors import CheckpointError, DataError
from .fileio import read_yaml_mapping
from .train.checkpoint import RunDir

__all__ = ["load_run_model", "run_store_path"]


def run_store_path(run_dir: str | Path) -> Path:
    """The store a run was trained on (from its ``config.yaml``)."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise CheckpointError(f"{run_dir}: no config.yaml; not a run directory (pass --store)")
    try:
        header = read_yaml_mapping(path, "run config").get("run", {})
    except DataError as exc:
        raise CheckpointError(f"{exc}; pass --store STORE") from None
    if not isinstance(header, dict) or not isinstance(header.get("store"), str):
        raise CheckpointError(f"{path}: no store recorded; pass --store")
    return Path(header["store"])


def load_run_model(run_or_file: str | Path):
    """The model of a run directory (best, else latest) or of a model file.

    Returns an :class:`~brainencoder.models.encoder.Encoder` or a
    :class:`~brainencoder.baselines.ridge.RidgeModel`, both with ``space``,
    ``predict(images, subject)`` and ``store_image_size``.
    """
    path = Path(run_or_file)
    if path.is_dir():
        ridge = path / "ridge.safetensors"
        path = ridge if ridge.exists() else RunDir(path).model_file()
    if path.name.startswith("ridge"):
        from .baselines.ridge import RidgeModel

        return RidgeModel.load(path)
    from .models.modelfile import load_encoder, read_model_file

    model = load_encoder(path)
    _, meta = read_model_file(path)
    model.store_image_size = int(meta["store_image_size"]) if "store_image_size" in meta else None
    return model
