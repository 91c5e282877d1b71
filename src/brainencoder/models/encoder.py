"""The encoder: a timm trunk plus a multi-subject readout, and its factory.

>>> enc = create_encoder("tiny", space=space, pca=pca)          # doctest: +SKIP
>>> out = enc.predict(images_uint8, subject="subj01")          # doctest: +SKIP
>>> out["lh"].shape                                             # doctest: +SKIP
(n_images, n_lh_vertices_of_subj01)
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import __version__
from ..errors import CheckpointError, ConfigError
from ..fileio import atomic_path
from ..space import GroupSpace
from .head import GroupLinReadout
from .trunk import Trunk

__all__ = [
    "ENCODER_CONFIGS",
    "Encoder",
    "EncoderConfig",
    "create_encoder",
    "load_encoder",
    "masked_mse",
    "save_encoder",
]

logger = logging.getLogger(__name__)
_FORMAT_VERSION = 1


@dataclass
class EncoderConfig:
    """Architecture of an encoder.

    Attributes
    ----------
    trunk : str
        timm model name (with optional pretrained tag).
    layers : list of int, str or list of str
        Trunk feature layers (indices or fnmatch globs on module names).
    pretrained : bool
        Load the trunk's pretrained weights (hub or cache).
    trunk_weights : str or None
        Local trunk weights file (safetensors or torch state dict).
    img_size : int or None
        Input size; default the trunk's pretrained config.
    trunk_kwargs : dict
        Extra keyword arguments for ``timm.create_model`` (dropped if the
        family does not accept them).
    hidden_dim : int
        Channels of each factorized projection.
    latent_dim : int or "auto"
        Group-PCA components (see :func:`brainencoder.pca.resolve_n_components`).
    dropout : float
        Dropout after each projection.
    """

    trunk: str = "eva02_base_patch14_224.mim_in22k"
    layers: list[int] | list[str] | str = field(default_factory=lambda: [0, 2, 4, 6, 8, 10])
    pretrained: bool = True
    trunk_weights: str | None = None
    img_size: int | None = None
    trunk_kwargs: dict[str, Any] = field(default_factory=dict)
    hidden_dim: int = 1024
    latent_dim: int | str = 2048
    dropout: float = 0.9

    def validate(self) -> None:
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"'dropout' must be in [0, 1); got {self.dropout}")
        if self.hidden_dim < 1:
            raise ConfigError(f"'hidden_dim' must be positive; got {self.hidden_dim}")


ENCODER_CONFIGS: dict[str, EncoderConfig] = {
    # the CMI-DAIR GroupLin Algonauts 2023 entry (shared/DESIGN.md section 3)
    "eva02_base": EncoderConfig(),
    # a CPU-sized encoder: random-init ResNet-18 (its ReLU + pooling features carry
    # signal even untrained), three stages, 112 px input
    "tiny": EncoderConfig(
        trunk="resnet18",
        layers=["layer1", "layer2", "layer3"],
        pretrained=False,
        img_size=112,
        hidden_dim=256,
        latent_dim=256,
        dropout=0.3,
    ),
}


def masked_mse(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    denominator: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error over each sample's own vertices.

    Parameters
    ----------
    pred, target : Tensor of shape (B, n_group)
    mask : BoolTensor of shape (B, n_group)
        True where the sample's subject has the vertex; other entries of
        ``target`` are ignored whatever they hold.
    denominator : float or Tensor, optional
        Divide the summed squared error by this instead of ``mask.sum()``
        (the count over a whole global batch, when this is a part of it).
    """
    diff = torch.where(mask, pred.float() - target.float(), torch.zeros((), device=pred.device))
    if denominator is None:
        denominator = mask.sum().clamp_min(1)
    return diff.pow(2).sum() / denominator


class Encoder(nn.Module):
    """Trunk + readout, with the group space it predicts into.

    Parameters
    ----------
    config : EncoderConfig
    space : GroupSpace
    components : Tensor of shape (latent_dim, n_group_vertices)
    mean : Tensor of shape (n_group_vertices,)
    """

    def __init__(
        self, config: EncoderConfig, space: GroupSpace, components: torch.Tensor, mean: torch.Tensor
    ) -> None:
        super().__init__()
        config.validate()
        if components.shape[1] != space.n_vertices:
            raise ConfigError(
                f"PCA components have {components.shape[1]} vertices but the group "
                f"space has {space.n_vertices}"
            )
        self.config = config
        self.space = space
        self.trunk = Trunk(
            config.trunk,
            config.layers,
            pretrained=config.pretrained,
            weights=config.trunk_weights,
            img_size=config.img_size,
            **config.trunk_kwargs,
        )
        self.feature_shapes = self.trunk.feature_shapes()
        self.head = GroupLinReadout(
            self.feature_shapes,
            len(space.subjects),
            components,
            mean,
            hidden_dim=config.hidden_dim,
            dropout=config.dropout,
        )
        dc = self.trunk.data_config
        self.register_buffer(
            "pixel_mean", torch.tensor(dc["mean"]).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(dc["std"]).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("subject_masks", torch.from_numpy(space.masks()), persistent=False)

    @property
    def input_size(self) -> int:
        return self.trunk.input_size

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1], (B, 3, H, W) -> the trunk's normalization."""
        return (images - self.pixel_mean) / self.pixel_std

    def forward_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Trunk feature maps of images in [0, 1], shape (B, 3, S, S)."""
        return self.trunk(self.normalize(images))

    def forward(self, images: torch.Tensor, subject: torch.Tensor) -> torch.Tensor:
        """Predict group-space responses.

        Parameters
        ----------
        images : Tensor of shape (B, 3, S, S), values in [0, 1]
        subject : LongTensor of shape (B,)
            Index into ``space.subjects``.

        Returns
        -------
        Tensor of shape (B, n_group_vertices)
        """
        return self.head(self.forward_features(images), subject)

    def prepare_images(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) or float (B, 3, H, W) -> float (B, 3, S, S) in [0, 1]."""
        x = torch.from_numpy(np.array(images)) if isinstance(images, np.ndarray) else images
        if x.dtype == torch.uint8:
            if x.ndim != 4 or x.shape[-1] != 3:
                raise ValueError(f"uint8 images must have shape (B, H, W, 3); got {tuple(x.shape)}")
            x = x.permute(0, 3, 1, 2).float().div_(255)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"images must have shape (B, 3, H, W); got {tuple(x.shape)}")
        size = self.input_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(
                x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
        return x

    @torch.no_grad()
    def predict(
        self, images: np.ndarray | torch.Tensor, subject: str, batch_size: int = 64
    ) -> dict[str, np.ndarray]:
        """Predict one subject's responses in its own challenge space.

        Parameters
        ----------
        images : ndarray of uint8, shape (n_images, H, W, 3), or float Tensor (n, 3, H, W)
        subject : str
            Subject name, e.g. ``"subj01"``.
        batch_size : int, default=64

        Returns
        -------
        dict with keys "lh", "rh" : ndarray of float32, shape (n_images, n_vertices_hemi)
        """
        index = self.space.subject_index(subject)
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        outs = []
        for start in range(0, len(images), batch_size):
            x = self.prepare_images(images[start : start + batch_size]).to(device)
            subj = torch.full((x.shape[0],), index, dtype=torch.long, device=device)
            outs.append(self(x, subj).float().cpu())
        self.train(was_training)
        group = (
            torch.cat(outs).numpy() if outs else np.zeros((0, self.space.n_vertices), np.float32)
        )
        return {
            h: np.ascontiguousarray(v) for h, v in self.space.split_hemis(subject, group).items()
        }


def _random_components(latent_dim: int, n_vertices: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n_vertices, latent_dim, generator=gen))
    return q.t().contiguous()


def create_encoder(
    name: str, space: GroupSpace, pca: Any | None = None, **overrides: Any
) -> Encoder:
    """Build a named encoder configuration, with keyword overrides.

    Parameters
    ----------
    name : str
        A key of :data:`ENCODER_CONFIGS` (``"eva02_base"``, ``"tiny"``).
    space : GroupSpace
        The group space to predict into.
    pca : GroupPCA, optional
        Fitted group PCA for the frozen embedding. Without it the embedding is
        a random orthonormal basis of ``latent_dim`` (an int) with zero mean,
        which is only useful for shapes and speed tests.
    **overrides
        Fields of :class:`EncoderConfig`; None values are ignored.

    Raises
    ------
    ConfigError
        For an unknown name or keyword, listing the valid ones.
    """
    if name not in ENCODER_CONFIGS:
        raise ConfigError(f"unknown encoder {name!r}; available: {sorted(ENCODER_CONFIGS)}")
    config = copy.deepcopy(ENCODER_CONFIGS[name])
    valid = {f.name for f in dataclasses.fields(EncoderConfig)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ConfigError(f"unknown encoder option(s) {unknown}; valid: {sorted(valid)}")
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    return build_encoder(config, space, pca)


def build_encoder(config: EncoderConfig, space: GroupSpace, pca: Any | None = None) -> Encoder:
    """Build an encoder from a config (see :func:`create_encoder`).

    The frozen embedding's rows are the PCA components scaled by their
    standard deviations (``sqrt(explained_variance)``): the same subspace as
    the reference's plain components, but a unit-variance latent now maps to
    responses of the data's scale, which with the zero-initialised shared
    layer makes the head start at the training mean and learn quickly."""
    if pca is None:
        if not isinstance(config.latent_dim, int):
            raise ConfigError("without a fitted PCA, 'latent_dim' must be an int")
        components = _random_components(config.latent_dim, space.n_vertices)
        mean = torch.zeros(space.n_vertices)
    else:
        from ..pca import resolve_n_components

        k = resolve_n_components(config.latent_dim, pca.n_samples, space.n_vertices)
        if config.latent_dim == "auto":
            k = min(k, pca.components.shape[0])
        if k > pca.components.shape[0]:
            raise ConfigError(
                f"latent_dim {k} is larger than the {pca.components.shape[0]} "
                "components of the given PCA"
            )
        components = torch.from_numpy(np.asarray(pca.components[:k]))
        components = components * torch.from_numpy(np.sqrt(pca.explained_variance[:k]))[:, None]
        mean = torch.from_numpy(np.asarray(pca.mean))
    return Encoder(config, space, components, mean)


# ----------------------------------------------------------------------------- save / load


def encoder_metadata(model: Encoder) -> dict[str, str]:
    """String metadata that, with the weights, rebuilds the model."""
    return {
        "format": "brainencoder-model",
        "format_version": str(_FORMAT_VERSION),
        "brainencoder_version": __version__,
        "config": json.dumps(dataclasses.asdict(model.config)),
        "subjects": json.dumps(model.space.subjects),
    }


def save_encoder(model: Encoder, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Save a self-contained model file (safetensors): weights, PCA, group space, config.

    Parameters
    ----------
    model : Encoder
    path : path
        Output file, written atomically.
    metadata : dict of str to str, optional
        Extra metadata stored in the file header.
    """
    from safetensors.torch import save_file

    model = getattr(model, "module", model)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"space.{k}": torch.from_numpy(v) for k, v in model.space.to_arrays().items()})
    meta = encoder_metadata(model)
    meta.update(metadata or {})
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def read_model_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a model file; clear errors for anything else."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: model file not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({exc}); it may be truncated"
        ) from None
    if meta.get("format") != "brainencoder-model":
        raise CheckpointError(f"{path}: not a brainencoder model file")
    if int(meta.get("format_version", -1)) != _FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: model format {meta.get('format_version')}, this "
            f"brainencoder reads {_FORMAT_VERSION}"
        )
    return tensors, meta


def load_state(model: Encoder, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load weights into ``model``, explaining any mismatch of configuration."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own.keys() & state.keys()
        if own[k].shape != state[k].shape
    ]
    if missing or extra or shapes:
        detail = "; ".join(
            filter(
                None,
                [
                    f"missing {missing[:5]}" if missing else "",
                    f"unexpected {extra[:5]}" if extra else "",
                    f"shape mismatch {shapes[:5]}" if shapes else "",
                ],
            )
        )
        raise CheckpointError(
            f"{source}: weights were saved from a different model configuration ({detail})"
        )
    model.load_state_dict(state)


def load_encoder(path: str | Path, map_location: str | torch.device = "cpu") -> Encoder:
    """Rebuild an encoder from a file of :func:`save_encoder` (no download, no pickle)."""
    tensors, meta = read_model_file(path)
    config = EncoderConfig(**json.loads(meta["config"]))
    config.pretrained, config.trunk_weights = False, None  # the weights are in the file
    subjects = json.loads(meta["subjects"])
    space = GroupSpace.from_arrays(
        subjects, {k[6:]: v.numpy() for k, v in tensors.items() if k.startswith("space.")}
    )
    state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    model = Encoder(config, space, state["head.embedding.components"], state["head.embedding.mean"])
    load_state(model, state, path)
    return model.to(map_location)
