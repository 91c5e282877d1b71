"""Named encoder presets: the architectures ``encoder: NAME`` of a training config picks.

A preset is the fields of an :class:`~brainencoder.models.encoder.EncoderConfig`
that differ from its defaults (a mapping), or a whole ``EncoderConfig``,
registered under a name in :data:`ENCODERS`; ``model.*`` keys of a config
override single fields of it. A plugin adds its own the same way::

    from brainencoder.models.presets import register_encoder

    register_encoder("dino_small", {
        "trunk": "hf:facebook/dinov2-small",
        "layers": [5, 7, 9, 11],
        "readout": {"name": "point"},
    })

and ``encoder: dino_small`` (or ``encoder=dino_small``) trains it. A preset is
checked when it is used (:func:`~brainencoder.models.encoder.preset_config`),
when the readouts and trunk families it names are registered; ``be.list_encoders()``
lists the names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..util.errors import ConfigError
from ..util.registry import Registry

__all__ = ["ENCODERS", "register_encoder"]

#: encoder presets, by the name ``encoder:`` gives: EncoderConfig fields (a mapping)
ENCODERS: Registry[dict[str, Any]] = Registry("encoder")


def register_encoder(name: str, config: Mapping[str, Any] | Any) -> dict[str, Any]:
    """Register the encoder preset ``name``.

    Parameters
    ----------
    name : str
        The name ``encoder:`` gives (letters, digits, ``_``, ``-``, ``.``).
    config : mapping or EncoderConfig
        Fields of :class:`~brainencoder.models.encoder.EncoderConfig` (the
        others keep their defaults), or a whole one.

    Returns
    -------
    dict
        The fields registered (a copy of ``config``'s).

    Raises
    ------
    ConfigError
        A taken or invalid name, or a ``config`` that is neither a mapping nor
        a dataclass.
    """
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        fields = dataclasses.asdict(config)
    elif isinstance(config, Mapping):
        fields = {str(k): v for k, v in config.items()}
    else:
        raise ConfigError(
            f"encoder preset {name!r} must be a mapping of EncoderConfig fields or an "
            f"EncoderConfig; got {type(config).__name__}"
        )
    return ENCODERS.register(name, fields)


# the CMI-DAIR GroupLin Algonauts 2023 entry (shared/DESIGN.md section 3): blocks
# 0, 2, ..., 10 of eva02 base (the EncoderConfig defaults), all 257 tokens, the
# original GroupLin readout
register_encoder(
    "eva02_base",
    {
        "prefix_tokens": True,
        "readout": {"name": "grouplin", "hidden_dim": 1024, "latent_dim": 2048, "dropout": 0.9},
    },
)
# a CPU-sized encoder: random-init ResNet-18 (its ReLU + pooling features carry
# signal even untrained), three stages, 112 px input
register_encoder(
    "tiny",
    {
        "trunk": "resnet18",
        "layers": ["layer1", "layer2", "layer3"],
        "pretrained": False,
        "img_size": 112,
        "readout": {"name": "grouplin_seq", "hidden_dim": 256, "latent_dim": 256, "dropout": 0.3},
    },
)
# two random-init trunks of different families in one `point` readout (model.trunks): the
# tiny encoder's ResNet-18 and timm's 0.4 M-parameter test ViT with 8 px patches (14 x 14
# tokens at 112 px); every vertex chooses among their 6 maps
register_encoder(
    "tiny_pair",
    {
        "pretrained": False,
        "img_size": 112,
        "trunks": [
            {"trunk": "resnet18", "layers": ["layer1", "layer2", "layer3"]},
            {"trunk": "test_vit", "layers": [1, 3, 5], "trunk_kwargs": {"patch_size": 8}},
        ],
        "readout": {"name": "point"},
    },
)
