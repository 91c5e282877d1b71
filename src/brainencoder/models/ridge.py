"""A fitted ridge baseline: per-subject linear maps from image features to vertices.

Written by ``brainencoder baseline`` (:mod:`brainencoder.baselines.ridge`) as
``ridge.safetensors``; read back by every command that takes a run.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from ..core.space import GroupSpace
from ..util.errors import CheckpointError, ConfigError
from ..util.fileio import atomic_path
from ..util.typecheck import MAX_IMAGE_SIZE, from_mapping
from ..util.version import __version__
from .extractor import FeatureExtractor, FeatureSpec
from .modelfile import loaded_record, read_metadata, record_metadata
from .solvers import RidgeFit

__all__ = ["RidgeModel"]


class RidgeModel:
    """Per-subject linear maps from features to the subject's vertices.

    Has the prediction interface of an encoder: ``space``,
    ``predict(images, subject)`` and ``store_image_size``.
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        space: GroupSpace,
        fits: dict[str, RidgeFit],
        store_image_size: int | None = None,
    ) -> None:
        self.extractor, self.space, self.fits = extractor, space, fits
        self.store_image_size = store_image_size
        self.training_record: dict | None = None  # what it trained on (runs.provenance)

    def predict(self, images: np.ndarray, subject: str) -> dict[str, np.ndarray]:
        """Predictions in the subject's challenge space, lh and rh (n_images, n_vertices)."""
        self.space.subject_index(subject)
        pred = self.fits[subject].predict(self.extractor(np.asarray(images)))
        return self.space.split_columns(subject, pred)

    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> None:
        """Self-contained safetensors file (trunk weights, PCA, maps, group space).

        Parameters
        ----------
        path : path
            Written atomically.
        metadata : dict of str to str, optional
            Extra header entries (what the model trained on).
        """
        from safetensors.torch import save_file

        tensors = {f"space.{k}": torch.from_numpy(v) for k, v in self.space.to_arrays().items()}
        for name, fit in self.fits.items():
            for key in ("coef", "intercept", "alphas"):
                tensors[f"fit.{name}.{key}"] = torch.from_numpy(
                    np.ascontiguousarray(getattr(fit, key), dtype=np.float32)
                )
        if self.extractor.trunk is not None:
            for k, v in self.extractor.trunk.state_dict().items():
                tensors[f"trunk.{k}"] = v.detach().contiguous()
        if self.extractor.pca_components is not None:
            tensors["pca.mean"] = torch.from_numpy(self.extractor.pca_mean)
            tensors["pca.components"] = torch.from_numpy(self.extractor.pca_components)
        meta = {
            "format": "brainencoder-ridge",
            "brainencoder_version": __version__,
            "spec": json.dumps(dataclasses.asdict(self.extractor.spec)),
            "subjects": json.dumps(self.space.subjects),
            "store_image_size": json.dumps(self.store_image_size),
            **record_metadata(self.training_record),
            **(metadata or {}),
        }
        with atomic_path(path, suffix=".safetensors") as tmp:
            save_file(tensors, str(tmp), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> RidgeModel:
        from safetensors import SafetensorError, safe_open

        meta = read_metadata(path)  # bounded, before any tensor is read
        try:
            with safe_open(str(path), framework="pt") as fh:
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path}: cannot read ridge model ({exc})") from None
        if meta.get("format") != "brainencoder-ridge":
            raise CheckpointError(f"{path}: not a brainencoder ridge model")
        try:
            spec = from_mapping(FeatureSpec, json.loads(meta["spec"]), prefix="spec.")
            subjects = json.loads(meta["subjects"])
            size = json.loads(meta["store_image_size"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: damaged ridge model header ({exc})") from None
        if not (isinstance(subjects, list) and all(isinstance(n, str) for n in subjects)):
            raise CheckpointError(f"{path}: damaged ridge model header (subjects)")
        if not (size is None or (isinstance(size, int) and 0 < size <= MAX_IMAGE_SIZE)):
            raise CheckpointError(f"{path}: damaged ridge model header (store_image_size)")
        trunk_state = {k[6:]: v for k, v in tensors.items() if k.startswith("trunk.")}
        spec.trunk_kwargs["from_header"] = True  # the trunk from the header alone, no folder
        try:
            extractor = FeatureExtractor(spec, trunk_state or None)
        except ConfigError as exc:
            raise CheckpointError(f"{path}: unusable ridge model config ({exc})") from None
        if "pca.mean" in tensors:
            extractor.pca_mean = tensors["pca.mean"].numpy()
            extractor.pca_components = tensors["pca.components"].numpy()
        space = GroupSpace.from_arrays(
            subjects, {k[6:]: v.numpy() for k, v in tensors.items() if k.startswith("space.")}
        )
        try:
            fits = {
                s: RidgeFit(
                    tensors[f"fit.{s}.coef"].numpy(),
                    tensors[f"fit.{s}.intercept"].numpy(),
                    tensors[f"fit.{s}.alphas"].numpy(),
                    np.zeros(0),
                )
                for s in subjects
            }
        except KeyError as exc:
            raise CheckpointError(f"{path}: damaged ridge model (no tensor {exc})") from None
        model = cls(extractor, space, fits, size)
        model.training_record = loaded_record(meta, path)
        return model
