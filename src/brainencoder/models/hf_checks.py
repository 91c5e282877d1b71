"""Limits and checks of the values a Hugging Face trunk is built from.

Every size and statistic read from a model folder, the local cache or a model
file's header is checked here before anything is allocated, and a bad one is
a one-line :class:`ConfigError` naming the file (or the header) and what to
do: ``image_mean`` / ``image_std`` are 3 finite numbers (std > 0), every image
side is 8 to :data:`~brainencoder.util.typecheck.MAX_IMAGE_SIZE` pixels (the
package's one limit of image sizes), and an architecture has at most
:data:`MAX_PARAMETERS` parameters (estimated from its config).
"""

from __future__ import annotations

import math
from typing import Any

from ..util.errors import ConfigError
from ..util.typecheck import MAX_IMAGE_SIZE

__all__ = [
    "HEADER",
    "MAX_PARAMETERS",
    "check_architecture",
    "check_header",
    "check_image_size",
    "check_stats",
]

#: the most parameters of a Hugging Face trunk's architecture (16 GiB of float32;
#: the largest ViT-G / bigG vision towers have under 2e9)
MAX_PARAMETERS = 4 * 10**9
#: how messages name a model file's header (the trunk's ``trunk_kwargs``)
HEADER = "the model header"
_MAX_LAYERS = 1024


def check_header(model_name: str, pretrained: bool, resolved: dict[str, Any]) -> None:
    """A model header must hold the trunk's config: the folder it names is never read.

    Parameters
    ----------
    model_name : str
        The folder or hub id the header names (never opened).
    pretrained : bool
        Must be False: the weights are in the model file.
    resolved : dict
        The header's ``config``, ``mean``, ``std``, ``input_size``.
    """
    if pretrained:
        raise ConfigError("a trunk rebuilt from a model header takes its weights from the file")
    if "config" not in resolved:
        raise ConfigError(
            f"{HEADER}: no Hugging Face config (trunk_kwargs.config) for trunk {model_name!r}; "
            "a model file is rebuilt from its header alone and the folder it names is never "
            "read: use a model file written by brainencoder, or train the model again"
        )


def check_stats(values: Any, key: str, source: str) -> list[float]:
    """``image_mean`` / ``image_std``: 3 finite numbers, one per RGB channel (std > 0).

    Parameters
    ----------
    values : Any
        The value read.
    key : str
        Its name (``image_mean``, ``trunk_kwargs.std``).
    source : str
        The file or header it came from.

    Returns
    -------
    list of float
    """
    numbers = isinstance(values, list | tuple) and len(values) == 3
    numbers = numbers and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    )
    ok = numbers and all(math.isfinite(v) for v in values)
    if ok and key.endswith("std"):
        ok = all(v > 0 for v in values)
    if not ok:
        shown = repr(values)[:80]
        positive = " > 0" if key.endswith("std") else ""
        raise ConfigError(
            f"{source}: {key} must be 3 finite numbers{positive}, one per RGB channel; "
            f"got {shown}: write it as a list such as [0.5, 0.5, 0.5]"
        )
    return [float(v) for v in values]


def check_image_size(value: Any, key: str, source: str) -> int:
    """An image side in pixels: an integer in [8, MAX_IMAGE_SIZE] (``util.typecheck``).

    Parameters
    ----------
    value : Any
    key : str
        Its name (``crop_size``, ``image_size``, ``trunk_kwargs.input_size``).
    source : str
        The file or header it came from.

    Returns
    -------
    int
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 8 <= value <= MAX_IMAGE_SIZE:
        raise ConfigError(
            f"{source}: {key} must be an image side of 8 to {MAX_IMAGE_SIZE} pixels; "
            f"got {repr(value)[:40]}: set it to the input size the model was trained at "
            "(224 for most models)"
        )
    return value


def _count(config: Any, key: str, source: str, low: int, high: int | None = None) -> int:
    """``config.key`` as an integer in [low, high]; else a one-line ConfigError."""
    value = getattr(config, key, None)
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or value > (high or value)
    ):
        bounds = f"in [{low}, {high}]" if high else f">= {low}"
        raise ConfigError(
            f"{source}: {key} must be an integer {bounds}; got {repr(value)[:40]}: "
            "use the config.json written by save_pretrained"
        )
    return value


def check_architecture(config: Any, source: str) -> None:
    """Refuse a vision config whose sizes are not positive integers or build a model too large.

    The parameter count is estimated from the config (patch embedding,
    position embedding, and per block attention and MLP) before the model is
    built; beyond :data:`MAX_PARAMETERS` it is refused.

    Parameters
    ----------
    config : transformers.PretrainedConfig
        The vision config.
    source : str
        The file or header it came from.
    """
    image = check_image_size(getattr(config, "image_size", None), "image_size", source)
    patch = _count(config, "patch_size", source, 1, image)
    width = _count(config, "hidden_size", source, 1)
    _count(config, "num_attention_heads", source, 1)
    _count(config, "num_channels", source, 3, 3)  # RGB images
    layers = _count(config, "num_hidden_layers", source, 1, _MAX_LAYERS)
    if getattr(config, "intermediate_size", None) is not None:
        hidden = _count(config, "intermediate_size", source, 1)
    else:  # DINOv2: a ratio of the width
        ratio = getattr(config, "mlp_ratio", 4)
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 < ratio <= 64:
            raise ConfigError(f"{source}: mlp_ratio must be a number in (0, 64]; got {ratio!r}")
        hidden = int(width * ratio)
    registers = 0
    if getattr(config, "num_register_tokens", None) is not None:
        registers = _count(config, "num_register_tokens", source, 0, 1024)
    tokens = (image // patch) ** 2 + 1 + registers
    count = layers * (4 * width * width + 2 * width * hidden) + (tokens + 3 * patch**2) * width
    if count > MAX_PARAMETERS:
        raise ConfigError(
            f"{source}: the architecture has about {count:.2g} parameters (hidden_size {width}, "
            f"{layers} layers, image_size {image}), more than the {MAX_PARAMETERS:.0e} of the "
            "largest vision trunk taken here; it is not a model's config"
        )
