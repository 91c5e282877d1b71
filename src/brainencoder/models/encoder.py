"""The encoder: a trunk plus a registered multi-subject readout, and its factory.

>>> enc = create_encoder("tiny", space=space, pca=pca)          # doctest: +SKIP
>>> out = enc.predict(images_uint8, subject="subj01")          # doctest: +SKIP
>>> out["lh"].shape                                             # doctest: +SKIP
(n_images, n_lh_vertices_of_subj01)

Model files (save / load) are in :mod:`brainencoder.models.modelfile`.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.space import GroupSpace
from ..data.transforms import resize
from ..util.errors import ConfigError
from ..util.typecheck import MAX_IMAGE_SIZE, check_int_range, check_trunk_kwargs, from_mapping
from .presets import ENCODERS
from .readouts import ReadoutContext, create_readout, validate_readout_config
from .trunk import TRUNK_FAMILIES, Trunk, split_trunk_name

__all__ = [
    "Encoder",
    "EncoderConfig",
    "build_encoder",
    "create_encoder",
    "merge_encoder_config",
    "preset_config",
]

logger = logging.getLogger(__name__)


@dataclass
class EncoderConfig:
    """Architecture of an encoder: a trunk and a readout.

    Attributes
    ----------
    trunk : str
        Model name in the trunk family (a timm name, with optional pretrained
        tag), or ``FAMILY:NAME`` (``hf:facebook/dinov2-base``, ``hf:/a/folder``).
    trunk_family : str
        Where the trunk comes from: a registered family
        (:data:`~brainencoder.models.trunk.TRUNK_FAMILIES`; ``"timm"``, ``"hf"``).
    layers : list of int, str or list of str
        Trunk feature layers (indices or fnmatch globs on module names).
    pretrained : bool
        Load the trunk's pretrained weights (hub or cache).
    trunk_weights : str or None
        Local trunk weights file (safetensors or torch state dict).
    img_size : int or None
        Input size (8 to 1024 px); default the trunk's pretrained config.
    prefix_tokens : bool
        Feed a ViT's class (and register) tokens to the readout with the
        patch tokens, as the original entry does.
    trunk_kwargs : dict
        Extra keyword arguments for the family's builder (``timm.create_model``);
        one the model does not accept is an error. A built encoder adds what
        rebuilds its trunk without files (an ``hf`` trunk's config, mean, std).
    readout : dict
        ``{"name": <registered readout>, **options}``
        (see :mod:`brainencoder.models.readouts`).
    """

    trunk: str = "eva02_base_patch14_224.mim_in22k"
    trunk_family: str = "timm"
    layers: list[int] | list[str] | str = field(default_factory=lambda: [0, 2, 4, 6, 8, 10])
    pretrained: bool = True
    trunk_weights: str | None = None
    img_size: int | None = None
    prefix_tokens: bool = False
    trunk_kwargs: dict[str, Any] = field(default_factory=dict)
    readout: dict[str, Any] = field(default_factory=lambda: {"name": "grouplin"})

    def __post_init__(self) -> None:  # "hf:NAME" -> trunk_family "hf", trunk "NAME"
        self.trunk_family, self.trunk = split_trunk_name(self.trunk, self.trunk_family)

    def validate(self) -> None:
        """Check values (of a config or a model file's header); ConfigError naming the key."""
        if self.img_size is not None:
            check_int_range("model.img_size", self.img_size, 8, MAX_IMAGE_SIZE)
        check_trunk_kwargs("model.trunk_kwargs.", self.trunk_kwargs)
        TRUNK_FAMILIES.get(self.trunk_family)
        validate_readout_config(self.readout)


class Encoder(nn.Module):
    """Trunk + readout, with the group space it predicts into.

    Parameters
    ----------
    config : EncoderConfig
    space : GroupSpace
    context : ReadoutContext, optional
        What the readout is built from (the fields its class ``needs``): the
        group PCA of readouts that embed through it (else a placeholder, for
        model files and shape tests), the region of every vertex (``roi_query``).
    """

    def __init__(
        self,
        config: EncoderConfig,
        space: GroupSpace,
        context: ReadoutContext | None = None,
    ) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.space = space
        self.trunk = Trunk(
            config.trunk,
            config.layers,
            pretrained=config.pretrained,
            weights=config.trunk_weights,
            img_size=config.img_size,
            prefix_tokens=config.prefix_tokens,
            family=config.trunk_family,
            **config.trunk_kwargs,
        )
        config.trunk_kwargs = dict(self.trunk.model_kwargs)  # the model file rebuilds it
        dc = self.trunk.data_config  # the dry run and the buffers below need sane values
        check_int_range("model.img_size", self.trunk.input_size, 8, MAX_IMAGE_SIZE)
        check_trunk_kwargs("model.trunk_kwargs.", {"mean": dc["mean"], "std": dc["std"]})
        self.feature_shapes = self.trunk.feature_shapes()
        options = dict(config.readout)
        name = options.pop("name")
        self.readout = create_readout(
            name,
            self.feature_shapes,
            space.subjects,
            space.n_vertices,
            context=context,
            **options,
        )
        config.readout = self.readout.config()  # resolved options (latent_dim "auto")
        self.trunk_trainable, self.trunk_bn_eval = True, False
        self.lora_config = None  # set when LoRA layers are applied to the trunk
        for key, value in (("pixel_mean", dc["mean"]), ("pixel_std", dc["std"])):
            self.register_buffer(
                key, torch.tensor(value).float().view(1, 3, 1, 1), persistent=False
            )
        self.register_buffer("subject_masks", torch.from_numpy(space.masks()), persistent=False)

    @property
    def subjects(self) -> list[str]:
        """The subjects the model predicts, in subject-index order."""
        return list(self.space.subjects)

    def add_subject(
        self, name: str, masks: dict[str, np.ndarray], like: str | list[str] | None = None
    ) -> torch.Tensor:
        """Add a subject (last in subject order) with its own new parameters.

        The group space grows by the subject's vertices that no other subject
        has; the readout's per-vertex tensors grow with it
        (:meth:`Readout.extend_vertices`), and the model's config follows.

        Parameters
        ----------
        name : str
            A new subject name.
        masks : dict of str to ndarray of bool, shape (n_fsaverage,)
            The subject's ``all-vertices`` masks per hemisphere.
        like : str or list of str, optional
            Start the subject's parameters as a copy (or the mean) of these
            subjects' (see :meth:`Readout.add_subject`).

        Returns
        -------
        LongTensor of shape (n_added,)
            Group indices of the vertices the subject added.
        """
        space, old_to_new, added = self.space.with_subject(name, masks)
        added_t = torch.from_numpy(added)
        if added.size:
            self.readout.extend_vertices(torch.from_numpy(old_to_new), added_t)
        self.readout.add_subject(name, like=like)
        self._set_space(space)
        return added_t

    def remove_subject(self, name: str) -> None:
        """Drop a subject and its own parameters (the group vertices stay)."""
        self.readout.remove_subject(name)
        self._set_space(self.space.without_subject(name))

    def _set_space(self, space: GroupSpace) -> None:
        if list(self.readout.subjects) != list(space.subjects):
            raise RuntimeError(
                f"readout subjects {self.readout.subjects} and space subjects "
                f"{space.subjects} disagree"
            )
        self.space = space
        self.subject_masks = torch.from_numpy(space.masks()).to(self.subject_masks.device)
        self.config.readout = self.readout.config()

    def set_trunk_mode(self, trainable: bool, bn_eval: bool = False) -> None:
        """Whether the trunk trains; a frozen trunk stays in eval mode in ``train()``.

        Parameters
        ----------
        trainable : bool
            False: trunk parameters get no gradient and the trunk (dropout,
            BatchNorm statistics) stays in eval mode whenever ``train()`` is called.
        bn_eval : bool, default=False
            For a trainable trunk, keep its BatchNorm layers in eval mode.
        """
        self.trunk_trainable, self.trunk_bn_eval = trainable, bn_eval
        for p in self.trunk.parameters():
            p.requires_grad_(trainable)
        self.train(self.training)

    def train(self, mode: bool = True) -> Encoder:
        super().train(mode)
        if not self.trunk_trainable:
            self.trunk.eval()
        elif self.trunk_bn_eval:
            for module in self.trunk.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

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
        return self.readout(self.forward_features(images), subject)

    def prepare_images(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The model's input: float (B, 3, S, S) in [0, 1], ``S = input_size``.

        Parameters
        ----------
        images : ndarray or Tensor
            uint8 (B, H, W, 3), or float (B, 3, H, W) in [0, 1]; another shape is a
            ValueError. Resized by :func:`brainencoder.data.transforms.resize`.
        """
        x = torch.from_numpy(np.array(images)) if isinstance(images, np.ndarray) else images
        if x.dtype == torch.uint8 and (x.ndim != 4 or x.shape[-1] != 3):
            raise ValueError(f"uint8 images must have shape (B, H, W, 3); got {tuple(x.shape)}")
        if x.dtype != torch.uint8 and (x.ndim != 4 or x.shape[1] != 3):
            raise ValueError(f"images must have shape (B, 3, H, W); got {tuple(x.shape)}")
        return resize(x, self.input_size)

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
            x = images[start : start + batch_size]
            if isinstance(x, np.ndarray):  # a read-only memmap's rows are copied, not shared
                x = torch.from_numpy(np.require(x, requirements=("C", "W")))
            if device.type == "cuda":  # uint8 crosses the bus (4x fewer bytes), pinned
                x = x.pin_memory().to(device, non_blocking=True)
            x = self.prepare_images(x)
            subj = torch.full((x.shape[0],), index, dtype=torch.long, device=device)
            outs.append(self(x, subj).float().cpu())
        self.train(was_training)
        group = (
            torch.cat(outs).numpy() if outs else np.zeros((0, self.space.n_vertices), np.float32)
        )
        return {
            h: np.ascontiguousarray(v) for h, v in self.space.split_hemis(subject, group).items()
        }


def merge_encoder_config(base: EncoderConfig, overrides: dict[str, Any]) -> EncoderConfig:
    """``base`` updated with ``overrides`` (a ``model:`` mapping), type-checked.

    ``readout`` options are merged into the base readout's (so
    ``model.readout.dropout=0.5`` changes one option); naming another readout
    (``model.readout.name=...``) starts from that readout's defaults. Unknown
    keys and ill-typed values are ConfigErrors naming ``model.<key>``.
    """
    data = dataclasses.asdict(base)
    for key, value in overrides.items():
        if value is None and key != "trunk_weights" and key != "img_size":
            continue
        if key == "readout" and isinstance(value, dict):
            same = value.get("name", data["readout"].get("name")) == data["readout"].get("name")
            value = {**data["readout"], **value} if same else dict(value)
        data[key] = value
    return from_mapping(EncoderConfig, data, prefix="model.")


def preset_config(name: str, overrides: dict[str, Any] | None = None) -> EncoderConfig:
    """The encoder preset ``name`` with ``overrides`` (see :func:`merge_encoder_config`).

    Raises
    ------
    ConfigError
        An unknown name (listing :data:`~brainencoder.models.presets.ENCODERS`),
        a preset that is no valid config (naming it), or a bad override.
    """
    preset = copy.deepcopy(ENCODERS.get(name))
    try:
        base = merge_encoder_config(EncoderConfig(), preset)
    except ConfigError as exc:
        raise ConfigError(f"encoder preset {name!r}: {exc}") from None
    return merge_encoder_config(base, overrides or {})


def create_encoder(
    name: str,
    space: GroupSpace,
    pca: Any | None = None,
    regions: Any | None = None,
    **overrides: Any,
) -> Encoder:
    """Build a named encoder configuration, with keyword overrides.

    Parameters
    ----------
    name : str
        A registered preset (:data:`~brainencoder.models.presets.ENCODERS`:
        ``"eva02_base"``, ``"tiny"``, a plugin's).
    space : GroupSpace
        The group space to predict into.
    pca : GroupPCA, optional
        Fitted group PCA for the frozen embedding. Without it the embedding is
        a random orthonormal basis of ``latent_dim`` (an int) with zero mean,
        which is only useful for shapes and speed tests.
    regions : RegionLabels, optional
        The region of every vertex (``roi_query`` readouts).
    **overrides
        Fields of :class:`EncoderConfig`; ``readout`` is merged with the
        preset's readout options.

    Raises
    ------
    ConfigError
        For an unknown name or keyword, listing the valid ones.
    """
    config = preset_config(name, overrides)
    return build_encoder(config, space, ReadoutContext(pca=pca, regions=regions))


def build_encoder(
    config: EncoderConfig,
    space: GroupSpace,
    context: ReadoutContext | None = None,
) -> Encoder:
    """Build an encoder from a config and the readout's context (see :class:`Encoder`).

    Returns
    -------
    Encoder
        Predicting (B, space.n_vertices) from images (B, 3, S, S).
    """
    return Encoder(config, space, context)
