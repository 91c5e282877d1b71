"""The architecture of an encoder as a config: :class:`EncoderConfig`, presets and overrides."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..util.errors import ConfigError
from ..util.typecheck import MAX_IMAGE_SIZE, check_int_range, check_trunk_kwargs, from_mapping
from .multi_trunk import TrunkSpec, parse_trunks
from .presets import ENCODERS
from .readouts import validate_readout_config
from .trunk import TRUNK_FAMILIES, split_trunk_name

__all__ = ["EncoderConfig", "merge_encoder_config", "preset_config"]


@dataclass
class EncoderConfig:
    """Architecture of an encoder: a trunk (or several) and a readout.

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
    trunks : list of dict
        Several trunks feeding the one readout (2 to
        :data:`~brainencoder.models.multi_trunk.MAX_TRUNKS`), each the fields of a
        :class:`~brainencoder.models.multi_trunk.TrunkSpec` (``trunk``, ``layers``,
        ``img_size``, ...). When given, ``trunk``, ``trunk_family``, ``layers``,
        ``trunk_weights`` and ``trunk_kwargs`` above are not used, and
        ``pretrained``, ``img_size`` and ``prefix_tokens`` are the entries' defaults.
        Empty: the one trunk above.
    trunk_dropout : float
        With ``trunks``: in training, drop all maps of a trunk for a sample with
        this probability (the kept ones scaled by 1 / (1 - p)); 0: off.
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
    trunks: list[dict[str, Any]] = field(default_factory=list)
    trunk_dropout: float = 0.0

    def __post_init__(self) -> None:  # "hf:NAME" -> trunk_family "hf", trunk "NAME"
        self.trunk_family, self.trunk = split_trunk_name(self.trunk, self.trunk_family)

    def validate(self) -> None:
        """Check values (of a config or a model file's header); ConfigError naming the key."""
        if self.img_size is not None:
            check_int_range("model.img_size", self.img_size, 8, MAX_IMAGE_SIZE)
        check_trunk_kwargs("model.trunk_kwargs.", self.trunk_kwargs)
        TRUNK_FAMILIES.get(self.trunk_family)
        validate_readout_config(self.readout)
        if self.trunks:
            self.trunk_specs()
        if not 0 <= self.trunk_dropout < 1:
            raise ConfigError(f"'model.trunk_dropout' must be in [0, 1); got {self.trunk_dropout}")
        if self.trunk_dropout and not self.trunks:
            raise ConfigError(
                "'model.trunk_dropout' drops whole trunks of model.trunks; this model has "
                "one trunk: set model.trunk_dropout: 0 (or list model.trunks)"
            )

    def trunk_specs(self) -> list[TrunkSpec]:
        """The ``trunks`` entries, checked, with the model's defaults filled in."""
        defaults = {k: getattr(self, k) for k in ("pretrained", "img_size", "prefix_tokens")}
        return parse_trunks(self.trunks, defaults)


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
