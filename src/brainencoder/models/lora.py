"""Low-rank adaptation (LoRA, Hu et al. 2021) of a trunk's linear and conv layers.

``apply_lora`` wraps the ``nn.Linear`` / ``nn.Conv2d`` modules whose names
match fnmatch patterns (``"*attn.qkv"``, ``"layer3.*.conv2"``): the wrapped
layer is frozen and a rank-r update ``scale * B @ A`` (``B`` starts at zero, so
the model starts unchanged; ``scale = alpha / rank``) is trained instead.
:func:`merged_state_dict` folds every update back into a plain weight, so a
saved model is an ordinary trunk that ``predict`` loads without LoRA.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..util.errors import ConfigError

__all__ = ["LoRAConfig", "LoRALayer", "apply_lora", "lora_layers", "merged_state_dict"]


@dataclass
class LoRAConfig:
    """Where and how large the low-rank updates are.

    Attributes
    ----------
    rank : int
    alpha : float
        The update is scaled by ``alpha / rank``.
    targets : list of str
        fnmatch patterns on the trunk's module names (timm names, e.g.
        ``"blocks.*.attn.qkv"``, ``"*attn.proj"``); each must match at least one
        ``nn.Linear`` or ``nn.Conv2d``. The default covers timm's attention
        layouts; a trunk that declares ``lora_targets`` (a Hugging Face trunk:
        its query, key and value projections) is targeted there instead.
    dropout : float
        Dropout on the update's input.
    weight_decay : bool
        Decay the LoRA factors too (default: no, as the LoRA paper and peft).
    """

    rank: int = 4
    alpha: float = 8.0
    targets: list[str] = field(
        default_factory=lambda: ["*attn.qkv", "*attn.q_proj", "*attn.k_proj", "*attn.v_proj"]
    )
    dropout: float = 0.0
    weight_decay: bool = False

    def validate(self) -> None:
        if self.rank < 1:
            raise ConfigError(f"'lora.rank' must be >= 1; got {self.rank}")
        if not self.alpha > 0:
            raise ConfigError(f"'lora.alpha' must be > 0; got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"'lora.dropout' must be in [0, 1); got {self.dropout}")
        if not self.targets:
            raise ConfigError("'lora.targets' must hold at least one module-name pattern")


class LoRALayer(nn.Module):
    """A frozen linear or conv layer plus a trainable rank-r update.

    Parameters
    ----------
    base : nn.Linear or nn.Conv2d (groups = 1)
    rank : int
    alpha : float
    dropout : float, default=0.0
    decay : bool, default=False
        Whether the optimizer decays ``lora_a`` / ``lora_b``.
    """

    def __init__(
        self,
        base: nn.Linear | nn.Conv2d,
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        decay: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(base, nn.Conv2d) and base.groups != 1:
            raise ConfigError("LoRA on grouped convolutions is not supported")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.rank, self.scale, self.decay = rank, alpha / rank, decay
        if isinstance(base, nn.Linear):
            fan_in, out = base.in_features, base.out_features
            self.lora_a = nn.Parameter(torch.empty(rank, fan_in))
        else:
            fan_in, out = base.in_channels * math.prod(base.kernel_size), base.out_channels
            self.lora_a = nn.Parameter(torch.empty(rank, base.in_channels, *base.kernel_size))
        nn.init.kaiming_uniform_(self.lora_a.view(rank, fan_in), a=math.sqrt(5))
        self.lora_b = nn.Parameter(torch.zeros(out, rank))
        self.dropout = nn.Dropout(dropout)

    def no_weight_decay(self) -> set[str]:
        return set() if self.decay else {"lora_a", "lora_b"}

    def delta(self) -> torch.Tensor:
        """``scale * B @ A`` in the base weight's shape."""
        a = self.lora_a.reshape(self.rank, -1)
        return (self.scale * self.lora_b @ a).reshape(self.base.weight.shape)

    @property
    def weight(self) -> torch.Tensor:
        """The effective weight ``W + scale * B @ A``, for code that reads ``.weight``.

        timm's EVA attention calls ``F.linear(x, self.qkv.weight, bias)`` with
        its own q/v bias instead of calling the layer, so a wrapped ``qkv``
        must offer the updated weight (LoRA dropout does not apply there).
        """
        return self.base.weight + self.delta()

    @property
    def bias(self) -> torch.Tensor | None:
        """The base layer's bias."""
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        h = self.dropout(x)
        if isinstance(self.base, nn.Linear):
            update = F.linear(F.linear(h, self.lora_a), self.lora_b)
        else:
            conv = self.base
            down = F.conv2d(h, self.lora_a, None, conv.stride, conv.padding, conv.dilation)
            update = F.conv2d(down, self.lora_b[:, :, None, None])
        return out + self.scale * update


def lora_layers(module: nn.Module) -> dict[str, LoRALayer]:
    """The LoRA layers inside ``module`` by name."""
    return {n: m for n, m in module.named_modules() if isinstance(m, LoRALayer)}


def apply_lora(module: nn.Module, config: LoRAConfig) -> list[str]:
    """Wrap the matching layers of ``module`` in :class:`LoRALayer` (in place).

    Parameters
    ----------
    module : nn.Module
        A trunk model (``Trunk.model``: a timm model, or a Hugging Face trunk
        whose ``lora_targets`` replace the default targets).
    config : LoRAConfig

    Returns
    -------
    list of str
        Names of the wrapped layers.

    Raises
    ------
    ConfigError
        A pattern matches no linear or conv layer (the message lists some), or
        the module already has LoRA layers.
    """
    if lora_layers(module):
        raise ConfigError("the trunk already has LoRA layers")
    candidates = {
        n: m for n, m in module.named_modules() if isinstance(m, nn.Linear | nn.Conv2d) and n
    }
    sample = ", ".join(list(candidates)[:6])
    # the default patterns cover several timm attention layouts: only one need match
    strict = list(config.targets) != LoRAConfig().targets
    targets = config.targets if strict else getattr(module, "lora_targets", None) or config.targets
    chosen: list[str] = []
    for pattern in targets:
        hits = [n for n in candidates if fnmatch.fnmatchcase(n, pattern)]
        if not hits and strict:
            raise ConfigError(
                f"lora target {pattern!r} matches no Linear or Conv2d layer of the trunk "
                f"(names look like: {sample}, ...)"
            )
        chosen += [n for n in hits if n not in chosen]
    if not chosen:
        raise ConfigError(
            f"lora targets {targets} match no Linear or Conv2d layer of the trunk "
            f"(names look like: {sample}, ...)"
        )
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        layer = LoRALayer(
            candidates[name], config.rank, config.alpha, config.dropout, config.weight_decay
        )
        setattr(parent, child, layer)
    return chosen


def merged_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` with every LoRA layer folded into a plain weight.

    Keys are those of the model without LoRA (``x.qkv.weight``, not
    ``x.qkv.base.weight`` / ``x.qkv.lora_a``).
    """
    state = module.state_dict()
    for name, layer in lora_layers(module).items():
        prefix = f"{name}." if name else ""
        for key in ("lora_a", "lora_b"):
            state.pop(f"{prefix}{key}")
        for key in list(state):
            if key.startswith(f"{prefix}base."):
                state[prefix + key[len(prefix) + 5 :]] = state.pop(key)
        with torch.no_grad():
            weight = layer.base.weight + layer.delta().to(layer.base.weight.dtype)
        state[f"{prefix}weight"] = weight.detach()
    return state
