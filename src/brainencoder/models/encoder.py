"""The encoder: a trunk plus a registered multi-subject readout, and its factory.

>>> enc = create_encoder("tiny", space=space, pca=pca)          # doctest: +SKIP
>>> out = enc.predict(images_uint8, subject="subj01")          # doctest: +SKIP
>>> out["lh"].shape                                             # doctest: +SKIP
(n_images, n_lh_vertices_of_subj01)

Model files (save / load) are in :mod:`brainencoder.models.modelfile`.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.space import GroupSpace
from ..data.transforms import resize
from ..util.typecheck import MAX_IMAGE_SIZE, check_int_range, check_trunk_kwargs
from .encoder_config import EncoderConfig, merge_encoder_config, preset_config
from .multi_trunk import TrunkDropout, TrunkSet
from .readouts import ReadoutContext, create_readout
from .trunk import Trunk

__all__ = [
    "Encoder",
    "EncoderConfig",
    "build_encoder",
    "create_encoder",
    "merge_encoder_config",
    "preset_config",
]

logger = logging.getLogger(__name__)


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
        self.trunk, dc = _build_trunk(config)
        self.feature_shapes = self.trunk.feature_shapes()
        self.trunk_dropout = (
            TrunkDropout(self.trunk.groups, config.trunk_dropout)
            if isinstance(self.trunk, TrunkSet) and config.trunk_dropout
            else None
        )
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
        """Trunk feature maps of images in [0, 1], shape (B, 3, S, S).

        Several trunks (``model.trunks``): every member's maps, member after
        member, each from the images at its own size and normalization.
        """
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
        features = self.forward_features(images)
        if self.trunk_dropout is not None:
            features = self.trunk_dropout(features)
        return self.readout(features, subject)

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


def _build_trunk(config: EncoderConfig) -> tuple[Trunk | TrunkSet, dict[str, Any]]:
    """The trunk (or the :class:`TrunkSet` of ``config.trunks``) and its data config.

    The config follows what rebuilds the trunk without files (each trunk's
    ``trunk_kwargs``); a trunk set normalizes per member, so its data config
    has mean 0 and std 1.
    """
    if config.trunks:
        specs = config.trunk_specs()
        trunks = TrunkSet(specs)
        config.trunks = [dataclasses.asdict(s) for s in specs]  # resolved: rebuilds it
        return trunks, {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    trunk = Trunk(
        config.trunk,
        config.layers,
        pretrained=config.pretrained,
        weights=config.trunk_weights,
        img_size=config.img_size,
        prefix_tokens=config.prefix_tokens,
        family=config.trunk_family,
        **config.trunk_kwargs,
    )
    config.trunk_kwargs = dict(trunk.model_kwargs)  # the model file rebuilds it
    dc = trunk.data_config  # the dry run and the buffers below need sane values
    check_int_range("model.img_size", trunk.input_size, 8, MAX_IMAGE_SIZE)
    check_trunk_kwargs("model.trunk_kwargs.", {"mean": dc["mean"], "std": dc["std"]})
    return trunk, dc


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
