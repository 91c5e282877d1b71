"""Several trunks in one encoder: ``model.trunks: [...]`` feeding one readout.

Each entry of ``model.trunks`` is a :class:`TrunkSpec` (a trunk name, timm or
``hf:``, with its own layers, input size and weights). :class:`TrunkSet` builds
them side by side; it takes images in [0, 1] at the largest member's input
size, resizes them to each member's own size (a member at that size reads them
as they are) and normalizes them with the member's own mean and std. The
feature maps of all members, member after member, go to ONE readout: for
``point`` every vertex then chooses among trunks x layers, the group-PCA
readouts average the projections of every map.

:class:`TrunkDropout` (``model.trunk_dropout: p``) drops all maps of a trunk
for a sample with probability ``p`` during training (at least one trunk is
kept per sample) and scales the kept ones by ``1 / (1 - p)``; in eval mode it
passes the maps through.

LoRA targets and freeze patterns address the members' own module and
parameter names (:func:`member_lora`, :func:`freeze_members`); a LoRA config
may name the trunk it adapts (``lora.trunk``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..data.transforms import resize
from ..util.errors import ConfigError
from ..util.typecheck import MAX_IMAGE_SIZE, check_int_range, check_trunk_kwargs, from_mapping
from .layers import apply_freeze
from .lora import LoRAConfig
from .trunk import TRUNK_FAMILIES, Trunk, split_trunk_name

__all__ = [
    "MAX_TRUNKS",
    "CachedHead",
    "TrunkDropout",
    "TrunkSet",
    "TrunkSpec",
    "cached_head",
    "freeze_members",
    "header_entries",
    "lora_parts",
    "member_lora",
    "parse_trunks",
]

#: the most trunks one model may have (a header naming more is refused before any build)
MAX_TRUNKS = 16
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass
class TrunkSpec:
    """One entry of ``model.trunks``.

    Attributes
    ----------
    trunk : str
        A model name in its family: timm (``"resnet18"``) or ``"hf:NAME"``.
    name : str or None
        How LoRA and messages name this trunk (letters, digits, ``_.-``);
        default the model name's last part (``"resnet18"``, ``"dinov2-small"``).
    trunk_family : str
    layers : list of int, str or list of str
        This trunk's feature layers (indices or globs; default its last one).
    pretrained : bool or None
        None: the model's ``pretrained``.
    trunk_weights : str or None
    img_size : int or None
        This trunk's input size; None: the model's ``img_size``, else its own default.
    prefix_tokens : bool or None
        None: the model's ``prefix_tokens``.
    trunk_kwargs : dict
    """

    trunk: str = ""
    name: str | None = None
    trunk_family: str = "timm"
    layers: list[int] | list[str] | str = field(default_factory=lambda: [-1])
    pretrained: bool | None = None
    trunk_weights: str | None = None
    img_size: int | None = None
    prefix_tokens: bool | None = None
    trunk_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.trunk_family, self.trunk = split_trunk_name(self.trunk, self.trunk_family)
        if self.name is None and self.trunk:
            self.name = re.sub(r"[^A-Za-z0-9_.-]", "_", self.trunk.rstrip("/").split("/")[-1])

    def validate(self) -> None:
        """Check the values (of a config or a header); ConfigError naming the key."""
        if not self.trunk:
            raise ConfigError("'trunk' is missing: each entry of model.trunks names a trunk")
        if not _NAME.match(str(self.name)):
            raise ConfigError(
                f"'name' must be 1 to 64 letters, digits, '_', '.' or '-'; got {self.name!r}"
            )
        if self.img_size is not None:
            check_int_range("img_size", self.img_size, 8, MAX_IMAGE_SIZE)
        check_trunk_kwargs("trunk_kwargs.", self.trunk_kwargs)
        TRUNK_FAMILIES.get(self.trunk_family)


def parse_trunks(entries: list[Any], defaults: dict[str, Any]) -> list[TrunkSpec]:
    """``model.trunks`` as checked :class:`TrunkSpec` s, unset values from the model's.

    Parameters
    ----------
    entries : list of mapping
        The ``model.trunks`` entries.
    defaults : dict
        The model's ``pretrained``, ``img_size`` and ``prefix_tokens``.

    Raises
    ------
    ConfigError
        Fewer than 2 or more than :data:`MAX_TRUNKS` entries, a bad entry
        (naming ``model.trunks[i].KEY``), or two entries of one name.
    """
    if not 2 <= len(entries) <= MAX_TRUNKS:
        raise ConfigError(
            f"'model.trunks' must list 2 to {MAX_TRUNKS} trunks; got {len(entries)} (one "
            "trunk is model.trunk)"
        )
    specs = []
    for i, entry in enumerate(entries):
        prefix = f"model.trunks[{i}]."
        try:
            spec = from_mapping(TrunkSpec, entry, prefix=prefix)
        except ConfigError as exc:
            text = str(exc)
            raise ConfigError(text if prefix in text else f"{prefix[:-1]}: {text}") from None
        for key in ("pretrained", "img_size", "prefix_tokens"):
            if getattr(spec, key) is None:
                setattr(spec, key, defaults.get(key))
        specs.append(spec)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"model.trunks has two trunks named alike ({names}); give each a 'name'")
    return specs


def header_entries(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A model file's ``trunks`` entries, rebuilt from the header alone (no weights, no file)."""
    out = []
    for entry in entries:
        entry = {**entry, "pretrained": False, "trunk_weights": None}
        kwargs = dict(entry.get("trunk_kwargs") or {})
        kwargs.pop("checkpoint_path", None)
        entry["trunk_kwargs"] = {**kwargs, "from_header": True}
        out.append(entry)
    return out


class TrunkSet(nn.Module):
    """Trunks side by side, each with its own input size and normalization.

    Parameters
    ----------
    specs : list of TrunkSpec
        Checked and complete (:func:`parse_trunks`).

    Attributes
    ----------
    members : nn.ModuleList of Trunk
    names : list of str
    groups : list of int
        Feature maps of each member, in order.
    input_size : int
        The largest member's input size: the side of the images :meth:`forward` takes.
    """

    def __init__(self, specs: list[TrunkSpec]) -> None:
        super().__init__()
        members = []
        for spec in specs:
            kwargs = dict(spec.trunk_kwargs)
            members.append(
                Trunk(
                    spec.trunk,
                    spec.layers,
                    pretrained=bool(spec.pretrained),
                    weights=spec.trunk_weights,
                    img_size=spec.img_size,
                    prefix_tokens=bool(spec.prefix_tokens),
                    family=spec.trunk_family,
                    **kwargs,
                )
            )
        self.members = nn.ModuleList(members)
        self.names = [str(s.name) for s in specs]
        self.groups = [len(m.indices) for m in members]
        for i, (spec, member) in enumerate(zip(specs, members, strict=True)):
            dc = member.data_config
            check_int_range(f"model.trunks[{i}].img_size", member.input_size, 8, MAX_IMAGE_SIZE)
            check_trunk_kwargs(f"model.trunks[{i}].", {"mean": dc["mean"], "std": dc["std"]})
            for key in ("mean", "std"):
                value = torch.tensor(dc[key]).float().view(1, 3, 1, 1)
                self.register_buffer(f"pixel_{key}_{i}", value, persistent=False)
            spec.trunk_kwargs = dict(member.model_kwargs)  # the model file rebuilds it
        self.input_size = max(m.input_size for m in members)

    @property
    def model(self) -> nn.Module:
        """What LoRA layers are applied to: the set itself (``members.I.model.NAME``)."""
        return self

    def member_features(self, index: int, images: torch.Tensor) -> list[torch.Tensor]:
        """Member ``index``'s maps of images in [0, 1], shape (B, 3, S, S), S = input_size.

        Returns
        -------
        list of Tensor of shape (B, C_l, H_l, W_l), or (B, C_l, T_l) with prefix tokens
        """
        member = self.members[index]
        x = resize(images, member.input_size)
        mean, std = getattr(self, f"pixel_mean_{index}"), getattr(self, f"pixel_std_{index}")
        return member((x - mean) / std)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Every member's maps, member after member, of images in [0, 1] (B, 3, S, S)."""
        return [f for i in range(len(self.members)) for f in self.member_features(i, images)]

    def member_shapes(self) -> list[list[tuple[int, ...]]]:
        """(C, H, W) or (C, T) of each member's maps (one dry run each)."""
        return [m.feature_shapes() for m in self.members]

    def feature_shapes(self) -> list[tuple[int, ...]]:
        """The shapes of :meth:`forward`'s maps."""
        return [s for shapes in self.member_shapes() for s in shapes]

    def index(self, name: str | int) -> int:
        """The position of the member named ``name`` (or an index); ConfigError listing them."""
        if isinstance(name, int) and not isinstance(name, bool) and 0 <= name < len(self.names):
            return name
        if name in self.names:
            return self.names.index(str(name))
        raise ConfigError(f"no trunk {name!r} in this model; its trunks are {self.names}")


class TrunkDropout(nn.Module):
    """Drop each trunk's maps per sample in training, scaling the kept ones by 1 / (1 - p).

    Parameters
    ----------
    groups : list of int
        Maps of each trunk, in order.
    p : float
        Probability of dropping a trunk for a sample; at least one trunk stays.
    """

    def __init__(self, groups: list[int], p: float) -> None:
        super().__init__()
        self.groups, self.p = list(groups), float(p)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Maps (B, C, ...) of every trunk -> the same maps, some zeroed per sample."""
        if not self.training or self.p == 0:
            return features
        b, n = features[0].shape[0], len(self.groups)
        device = features[0].device
        keep = torch.rand(b, n, device=device) >= self.p
        lone = torch.randint(n, (b,), device=device)
        # a sample that dropped every trunk keeps one at random
        keep[torch.arange(b, device=device), lone] |= ~keep.any(1)
        scale = keep.float() / (1 - self.p)
        out, start = [], 0
        for trunk, count in enumerate(self.groups):
            for f in features[start : start + count]:
                out.append(f * scale[:, trunk].view(b, *([1] * (f.ndim - 1))).to(f.dtype))
            start += count
        return out


class CachedHead(nn.Module):
    """A readout behind a :class:`TrunkDropout`: what trains from a feature cache.

    Parameters
    ----------
    dropout : TrunkDropout
    readout : nn.Module
        ``readout(features, subject)``; its parameters are this module's (``readout.*``).
    """

    def __init__(self, dropout: TrunkDropout, readout: nn.Module) -> None:
        super().__init__()
        self.trunk_dropout, self.readout = dropout, readout

    def forward(self, features: list[torch.Tensor], subject: torch.Tensor) -> torch.Tensor:
        """Maps (B, C, ...) of every trunk and subjects (B,) -> (B, n_vertices)."""
        return self.readout(self.trunk_dropout(features), subject)


def cached_head(model: Any) -> nn.Module:
    """What trains from a feature cache: an encoder's readout, behind its trunk dropout if any."""
    dropout = getattr(model, "trunk_dropout", None)
    return model.readout if dropout is None else CachedHead(dropout, model.readout)


def lora_parts(options: dict[str, Any]) -> tuple[LoRAConfig, str | int | None]:
    """A ``lora:`` mapping as a checked LoRAConfig and its ``trunk`` (None: not given).

    ``lora.trunk`` names (or indexes) the one of ``model.trunks`` LoRA adapts;
    without it LoRA adapts every trunk that has the targets.
    """
    trunk = options.get("trunk")
    if trunk is not None and (isinstance(trunk, bool) or not isinstance(trunk, str | int)):
        raise ConfigError(f"'lora.trunk' must be a trunk's name or index; got {trunk!r}")
    rest = {k: v for k, v in options.items() if k != "trunk"}
    return from_mapping(LoRAConfig, rest, prefix="lora."), trunk


def member_lora(trunks: TrunkSet, config: LoRAConfig, trunk: str | int | None) -> LoRAConfig:
    """``config`` with targets on the named member (on every member that has them: None).

    The targets become patterns on the set's module names
    (``members.1.model.blocks.*.attn.qkv``); the default targets (or a Hugging
    Face member's ``lora_targets``) keep only the patterns a member has.

    Raises
    ------
    ConfigError
        An unknown trunk name, or no member with a layer the targets match.
    """
    chosen = range(len(trunks.members)) if trunk is None else [trunks.index(trunk)]
    default = list(config.targets) == LoRAConfig().targets
    targets: list[str] = []
    for i in chosen:
        model = trunks.members[i].model
        own = (getattr(model, "lora_targets", None) or config.targets) if default else None
        names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]
        for pattern in own or config.targets:
            hit = any(fnmatch.fnmatchcase(n, pattern) for n in names)
            if hit or own is None:  # named targets must all match (apply_lora says which not)
                targets.append(f"members.{i}.model.{pattern}")
    if not targets:
        where = "any trunk" if trunk is None else f"trunk {trunk!r}"
        raise ConfigError(
            f"lora targets {config.targets} match no Linear or Conv2d layer of {where}; "
            "set lora.targets (or lora.trunk to a trunk that has them)"
        )
    return dataclasses.replace(config, targets=targets)


def freeze_members(trunks: TrunkSet, patterns: list[str]) -> list[str]:
    """Freeze the parameters of every member whose own names match ``patterns``.

    Returns
    -------
    list of str
        The frozen parameters' names in the set (``members.I.model.NAME``).

    Raises
    ------
    ConfigError
        A pattern that matches no parameter of any member.
    """
    frozen: list[str] = []
    for pattern in patterns:
        hits = []
        for i, member in enumerate(trunks.members):
            names = [n for n, _ in member.model.named_parameters()]
            if any(fnmatch.fnmatchcase(n, pattern) for n in names):
                hits += [f"members.{i}.model.{n}" for n in apply_freeze(member.model, [pattern])]
        if not hits:
            raise ConfigError(
                f"freeze pattern {pattern!r} matches no parameter of the trunks {trunks.names}"
            )
        frozen += hits
    return sorted(set(frozen))
