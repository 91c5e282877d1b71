"""A backbone that returns feature maps of selected layers.

The trunk wraps any model that implements timm's feature interface
(``forward_intermediates``, ``feature_info``, ``prune_intermediate_layers``):
every timm vision transformer (with or without prefix tokens), ResNet,
ConvNeXt, ... Layers are chosen by index into the model's ``feature_info`` or
by fnmatch globs on its module names (``"blocks.[02468]"``, :mod:`.layers`); layers
after the last chosen one, and the classifier head, are pruned so they cost nothing.

Where models come from is a *trunk family* registered in
:data:`TRUNK_FAMILIES` (``model.trunk_family``, or a name prefix:
``hf:facebook/dinov2-base``): ``"timm"`` (the default, :func:`timm_trunk`),
``"hf"`` (``transformers`` vision models, :mod:`.hf_trunk`). Another
library's models join as a family whose builder wraps them in that interface.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ..util.errors import BrainEncoderError, ConfigError
from ..util.registry import Registry
from .hf_trunk import hf_trunk
from .layers import LayerSpec, apply_freeze, resolve_layers

__all__ = [
    "TRUNK_FAMILIES",
    "Trunk",
    "TrunkBuilder",
    "apply_freeze",
    "create_timm_model",
    "list_trunk_names",
    "resolve_layers",
    "split_trunk_name",
    "timm_trunk",
]

logger = logging.getLogger(__name__)


def create_timm_model(
    name: str,
    pretrained: bool = False,
    weights: str | Path | None = None,
    optional: Iterable[str] = (),
    **kwargs: Any,
) -> nn.Module:
    """Create a timm model, from the hub/cache, a local weights file, or random.

    A keyword argument the model family does not accept (e.g. a ViT's
    ``attn_drop_rate`` for a ResNet) is a :class:`ConfigError` naming it, except
    those in ``optional``, which are dropped silently (e.g. ``img_size``, which
    convnets do not need). Keyword arguments set to None are dropped, as in timm.

    Parameters
    ----------
    name : str
        timm model name, optionally with a pretrained tag
        (``"eva02_base_patch14_224.mim_in22k"``).
    pretrained : bool, default=False
        Load pretrained weights (from the Hugging Face hub or its local cache).
    weights : path, optional
        Local weights file (``.safetensors`` or a torch state dict, read with
        ``weights_only=True``); implies ``pretrained``. It goes through timm's
        own pretrained-loading path (``pretrained_cfg_overlay=dict(file=...)``).
    optional : iterable of str, default=()
        Keyword arguments to drop when the family does not accept them.
    **kwargs
        Passed to :func:`timm.create_model`.
    """
    import timm

    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if "checkpoint_path" in kwargs:
        # timm loads it strictly into the full model after building it (a ViT
        # checkpoint at another img_size, or one with another head, fails deep in
        # torch), and the path would stay in every model file's config, so that
        # loading the model elsewhere would read it again
        raise ConfigError(
            f"'trunk_kwargs.checkpoint_path' is not supported; pass the file as "
            f"model.trunk_weights={kwargs['checkpoint_path']} instead (a .safetensors or "
            "torch state dict of the timm model, loaded as its pretrained weights)"
        )
    if weights is not None:
        weights = Path(weights)
        if not weights.is_file():
            raise BrainEncoderError(f"{weights}: trunk weights file not found")
        kwargs["pretrained_cfg_overlay"] = {"file": str(weights)}
        pretrained = True
    base = name.split(".")[0]
    if base not in timm.list_models():
        close = timm.list_models(f"*{base.split('_')[0]}*")[:10]
        raise ConfigError(f"unknown timm model {name!r}; similar names: {close}")
    while True:
        try:
            return timm.create_model(name, pretrained=pretrained, **kwargs)
        except TypeError as exc:
            match = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
            if match is None or match.group(1) not in kwargs:
                raise
            if match.group(1) not in optional:
                raise ConfigError(
                    f"trunk {name!r} does not accept the keyword argument "
                    f"'trunk_kwargs.{match.group(1)}'; remove it from the config"
                ) from None
            logger.debug("trunk %s does not accept %r; not passing it", name, match.group(1))
            kwargs.pop(match.group(1))
        except (OSError, RuntimeError) as exc:
            if not pretrained:
                raise
            text = f"{type(exc).__name__}: {exc}"
            if weights is not None:
                raise BrainEncoderError(
                    f"{weights}: cannot load weights for {name} ({text[:300]})"
                ) from None
            raise BrainEncoderError(
                f"cannot get pretrained weights for {name!r} ({text[:200]}). This machine may "
                "be offline: download the weights elsewhere (e.g. the model's "
                "model.safetensors on huggingface.co/timm) and pass the file: "
                "model.trunk_weights=PATH to train (--trunk-weights PATH to baseline and "
                "import-original), or set model.pretrained=false to use random weights"
            ) from None


class TrunkBuilder(Protocol):
    """Builds a family's model: ``(model_name, pretrained, weights, img_size, **kwargs)``.

    Returns the model (with timm's ``forward_intermediates``, ``feature_info``
    and ``prune_intermediate_layers``) and its data config (a dict with at
    least ``input_size`` (3, H, W), ``mean`` and ``std``). A builder may take
    ``from_header: bool``: :class:`Trunk` passes ``from_header=True`` when a
    model file is loaded, and the builder must then read no file its
    arguments name (the header may come from anyone).
    """

    def __call__(
        self,
        model_name: str,
        pretrained: bool = False,
        weights: str | Path | None = None,
        img_size: int | None = None,
        **kwargs: Any,
    ) -> tuple[nn.Module, dict[str, Any]]: ...


#: trunk families, by the name ``model.trunk_family`` gives; a family's builder
#: may list its model names (a ``list_names(pattern, pretrained)`` attribute:
#: :func:`list_trunk_names`)
TRUNK_FAMILIES: Registry[TrunkBuilder] = Registry("trunk family")
TRUNK_FAMILIES.register("hf", hf_trunk)
_PREFIX = re.compile(r"^([A-Za-z][A-Za-z0-9_.-]*):(.+)$")
_DEFAULT_FAMILY = "timm"  # the family of a name without a FAMILY: prefix


def list_trunk_names(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Model names of every trunk family whose builder lists them, matching ``pattern``.

    A family lists its names when its builder has a ``list_names(pattern,
    pretrained) -> list of str`` attribute (timm's and ``hf``'s do; a plugin's
    family may). Names of the default family (timm) come first and bare,
    the others' as ``FAMILY:NAME``, family by family.

    Parameters
    ----------
    pattern : str, default="*"
        fnmatch pattern on the names within a family (``"eva02_base*"``).
    pretrained : bool, default=False
        Only models with pretrained weights (a family without that notion ignores it).

    Returns
    -------
    list of str
    """
    names: list[str] = []
    for family in sorted(TRUNK_FAMILIES, key=lambda f: f != _DEFAULT_FAMILY):
        lister = getattr(TRUNK_FAMILIES.get(family), "list_names", None)
        if callable(lister):
            prefix = "" if family == _DEFAULT_FAMILY else f"{family}:"
            names += [f"{prefix}{n}" for n in lister(pattern, pretrained)]
    return names


def _hf_cached_names(pattern: str, pretrained: bool = False) -> list[str]:
    """The Hugging Face models in the local cache (all have weights) matching ``pattern``."""
    import fnmatch

    try:
        from huggingface_hub import scan_cache_dir

        cached = sorted(r.repo_id for r in scan_cache_dir().repos if r.repo_type == "model")
    except Exception:  # no cache folder, or huggingface_hub missing: nothing cached
        cached = []
    return [n for n in cached if fnmatch.fnmatch(n, pattern)]


hf_trunk.list_names = _hf_cached_names  # type: ignore[attr-defined]


def split_trunk_name(name: str, family: str = _DEFAULT_FAMILY) -> tuple[str, str]:
    """``("hf:NAME", f)`` -> ``("hf", "NAME")``; without a ``FAMILY:`` prefix ``(f, name)``."""
    match = _PREFIX.match(name)
    if match is None:
        return family, name
    if family not in (_DEFAULT_FAMILY, match.group(1)):
        raise ConfigError(
            f"model.trunk {name!r} names family {match.group(1)!r}, model.trunk_family {family!r}"
        )
    return match.group(1), match.group(2)


@TRUNK_FAMILIES.register("timm")
def timm_trunk(
    model_name: str,
    pretrained: bool = False,
    weights: str | Path | None = None,
    img_size: int | None = None,
    **kwargs: Any,
) -> tuple[nn.Module, dict[str, Any]]:
    """A timm model with ``forward_intermediates`` and its resolved data config.

    Parameters
    ----------
    model_name : str
        timm model name (with optional pretrained tag).
    pretrained : bool, default=False
    weights : path, optional
        Local weights file (see :func:`create_timm_model`).
    img_size : int, optional
        Input side length, for models that accept it (convnets do not need it).
    **kwargs
        Passed to :func:`timm.create_model`.

    Returns
    -------
    model : nn.Module
    data_config : dict
        timm's ``resolve_model_data_config`` (input_size, mean, std, ...).
    """
    import timm

    if img_size is not None:
        kwargs["img_size"] = img_size
    model = create_timm_model(
        model_name, pretrained=pretrained, weights=weights, optional=("img_size",), **kwargs
    )
    if not hasattr(model, "forward_intermediates"):
        raise ConfigError(
            f"timm model {model_name!r} has no forward_intermediates; choose "
            "a ViT, ResNet, ConvNeXt or other model that supports it"
        )
    return model, timm.data.resolve_model_data_config(model)


def _timm_names(pattern: str, pretrained: bool = False) -> list[str]:
    """timm's model names matching ``pattern`` (``pretrained``: only those with weights)."""
    import timm

    return timm.list_models(pattern, pretrained=pretrained)


timm_trunk.list_names = _timm_names  # type: ignore[attr-defined]


class Trunk(nn.Module):
    """Backbone returning (B, C, H, W) feature maps of chosen layers.

    Parameters
    ----------
    model_name : str
        Model name in its family (a timm model name), or ``FAMILY:NAME``
        (``"hf:facebook/dinov2-base"``, ``"hf:/path/to/folder"``).
    layers : sequence of int, str or sequence of str
        See :func:`resolve_layers`.
    pretrained : bool, default=False
    weights : path, optional
        Local weights file (see :func:`create_timm_model`).
    img_size : int, optional
        Input side length; default the model's pretrained config. Passed to
        models that accept it (ViTs interpolate their position embedding).
    prefix_tokens : bool, default=False
        For trunks with prefix tokens (a ViT's class and register tokens),
        return every token: maps of shape (B, C, n_prefix + H*W), prefix
        tokens first, then the patches in row-major order (the layout of the
        blocks' own outputs). Trunks without prefix tokens return (B, C, H, W).
    family : str, default="timm"
        A registered trunk family (:data:`TRUNK_FAMILIES`).
    from_header : bool, default=False
        Rebuild from ``model_kwargs`` alone (a model file's header, which may
        come from anyone): no weights are loaded, and a builder that takes
        ``from_header`` (``hf``) reads no folder or file ``model_name`` names.
        A ``from_header`` key of a config's ``trunk_kwargs`` binds here too
        (it is never kept in :attr:`model_kwargs`).
    **model_kwargs
        Extra keyword arguments for the family's builder (for timm:
        :func:`timm.create_model`).

    Attributes
    ----------
    indices : list of int
        Chosen feature layers.
    layer_names : list of str
    data_config : dict
        The resolved data config (input_size, mean, std, interpolation, ...).
    family : str
    model_kwargs : dict
        Keyword arguments rebuilding this architecture without files (an ``hf`` config).
    lora_targets : list of str or None
        Default LoRA targets (None: timm's attention layouts).
    """

    def __init__(
        self,
        model_name: str,
        layers: LayerSpec,
        pretrained: bool = False,
        weights: str | Path | None = None,
        img_size: int | None = None,
        prefix_tokens: bool = False,
        family: str = "timm",
        from_header: bool = False,
        **model_kwargs: Any,
    ) -> None:
        super().__init__()
        family, model_name = split_trunk_name(model_name, family)
        build = TRUNK_FAMILIES.get(family)
        if from_header and (pretrained or weights is not None):
            raise ConfigError("a trunk rebuilt from a model header takes its weights from the file")
        takes_flag = from_header and "from_header" in inspect.signature(build).parameters
        model, data_config = build(
            model_name,
            pretrained=pretrained,
            weights=weights,
            img_size=img_size,
            **({"from_header": True} if takes_flag else {}),
            **model_kwargs,
        )
        module_names = [f["module"] for f in model.feature_info]
        self.indices = resolve_layers(module_names, layers)
        self.layer_names = [module_names[i] for i in self.indices]
        self.data_config = dict(data_config)
        if img_size is not None:
            self.data_config["input_size"] = (3, img_size, img_size)
        model.prune_intermediate_layers(self.indices, prune_head=True)
        self.model = model
        self.family = family
        self.model_kwargs = {**model_kwargs, **getattr(model, "resolved_kwargs", {})}
        self.lora_targets = getattr(model, "lora_targets", None)
        self.n_prefix = int(getattr(model, "num_prefix_tokens", 0) or 0) if prefix_tokens else 0

    @property
    def input_size(self) -> int:
        """Side length of the square input images."""
        return int(self.data_config["input_size"][-1])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of the chosen layers.

        Parameters
        ----------
        x : Tensor of shape (B, 3, H, W)
            Normalized images.

        Returns
        -------
        list of Tensor of shape (B, C_l, H_l, W_l), or (B, C_l, T_l) with prefix tokens
        """
        if not self.n_prefix:
            return self.model.forward_intermediates(
                x, indices=self.indices, intermediates_only=True
            )
        pairs = self.model.forward_intermediates(
            x, indices=self.indices, intermediates_only=True, return_prefix_tokens=True
        )
        return [torch.cat([p.transpose(1, 2), s.flatten(2)], dim=2) for s, p in pairs]

    @torch.no_grad()
    def feature_shapes(self) -> list[tuple[int, ...]]:
        """(C, H, W) or (C, T) of each chosen layer at :attr:`input_size` (one dry run)."""
        was_training = self.training
        self.eval()
        size = self.input_size
        feats = self(torch.zeros(1, 3, size, size, device=next(self.parameters()).device))
        self.train(was_training)
        return [tuple(f.shape[1:]) for f in feats]
