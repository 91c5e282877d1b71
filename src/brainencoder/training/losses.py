"""Training losses as registered components.

A loss compares predictions and targets in the group space over each sample's
own vertices (``mask``); targets outside the mask are ignored whatever they
hold. Configured as ``loss: {name: smooth_l1, beta: 0.01}``.

Losses that are sums over samples (``mse``, ``smooth_l1``) take the number of
(sample, vertex) pairs of the *whole global batch* as ``denominator``, so the
micro-batches of gradient accumulation and the DDP ranks add up to exactly the
global batch's loss and gradient. ``pearson`` (one correlation per vertex over
the batch) does not decompose over samples: it is refused with gradient
accumulation or more than one process, where it would silently be a different
loss (see :attr:`Loss.decomposes`).

A loss of one's own is a :class:`Loss` subclass registered with
:func:`register_loss` in a plugin module (``plugins: [my_losses]``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..util.errors import ConfigError
from ..util.registry import Registry
from ..util.typecheck import from_mapping

__all__ = [
    "LOSSES",
    "Loss",
    "create_loss",
    "list_losses",
    "masked_mse",
    "register_loss",
    "validate_loss",
]

#: every registered loss class, by name
LOSSES: Registry[type[Loss]] = Registry("loss")


class Loss:
    """Base class: ``loss(pred, target, mask, denominator) -> scalar``.

    Attributes
    ----------
    decomposes : bool
        True when the loss is a sum over samples divided by ``denominator``.
    """

    name: ClassVar[str] = ""
    options_class: ClassVar[type] = object
    decomposes: ClassVar[bool] = True

    def __init__(self, options: Any) -> None:
        self.options = options

    def __call__(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor,
        denominator: float | torch.Tensor | None = None,
        subject: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of a (micro-)batch.

        Parameters
        ----------
        pred, target : Tensor of shape (B, n_vertices)
        mask : BoolTensor of shape (B, n_vertices)
        denominator : float or Tensor, optional
            Summed losses are divided by this (default: ``mask.sum()``).
        subject : LongTensor of shape (B,), optional
            Each sample's subject index (losses that group samples use it).

        Returns
        -------
        Tensor, scalar
        """
        raise NotImplementedError


def register_loss(name: str, options_class: type) -> Any:
    """Class decorator registering a loss under ``name`` with its options dataclass.

    Parameters
    ----------
    name : str
        The name configs use (``loss.name``).
    options_class : dataclass type
        The loss's options (``loss.<option>``); ``validate()``, if defined, checks them.

    Raises
    ------
    ConfigError
        If ``name`` is taken.
    """
    if not dataclasses.is_dataclass(options_class):
        raise TypeError("options_class must be a dataclass")

    def wrap(cls: type[Loss]) -> type[Loss]:
        LOSSES.register(name, cls)
        cls.name, cls.options_class = name, options_class
        return cls

    return wrap


def list_losses() -> list[str]:
    """Names of the registered losses."""
    return LOSSES.names()


def validate_loss(config: Mapping[str, Any]) -> Any:
    """Check ``{"name": ..., **options}``; returns the options instance."""
    if not isinstance(config, Mapping) or "name" not in config:
        raise ConfigError(
            f"'loss' must be a mapping with a 'name' (one of {list_losses()}); got {config!r}"
        )
    cls = LOSSES.get(config["name"])
    return from_mapping(
        cls.options_class, {k: v for k, v in config.items() if k != "name"}, "loss."
    )


def create_loss(config: Mapping[str, Any]) -> Loss:
    """Build the loss described by ``{"name": ..., **options}``.

    Returns
    -------
    Loss
        ``loss(pred, target, mask)`` of (B, n_vertices) tensors -> a scalar.
    """
    options = validate_loss(config)
    return LOSSES.get(config["name"])(options)


def _masked_sum(
    values: torch.Tensor, mask: torch.Tensor, denominator: float | torch.Tensor | None
) -> torch.Tensor:
    values = torch.where(mask, values, torch.zeros((), device=values.device, dtype=values.dtype))
    if denominator is None:
        denominator = mask.sum().clamp_min(1)
    return values.sum() / denominator


def masked_mse(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    denominator: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error over each sample's own vertices (see :class:`Loss`)."""
    diff = torch.where(mask, pred.float() - target.float(), torch.zeros((), device=pred.device))
    return _masked_sum(diff.pow(2), mask, denominator)


@dataclass
class _NoOptions:
    pass


@register_loss("mse", _NoOptions)
class MSELoss(Loss):
    """Masked mean squared error (the original entry's loss, over own vertices)."""

    def __call__(self, pred, target, mask, denominator=None, subject=None):
        return masked_mse(pred, target, mask, denominator)


@dataclass
class SmoothL1Options:
    """``beta``: where the loss turns from quadratic to linear (in response units)."""

    beta: float = 1.0

    def validate(self) -> None:
        if self.beta <= 0:
            raise ConfigError(f"'loss.beta' must be > 0; got {self.beta}")


@register_loss("smooth_l1", SmoothL1Options)
class SmoothL1Loss(Loss):
    """Masked SmoothL1 (Huber / beta); the first-place entry used beta = 0.01."""

    def __call__(self, pred, target, mask, denominator=None, subject=None):
        diff = torch.where(mask, pred.float() - target.float(), torch.zeros((), device=pred.device))
        values = torch.nn.functional.smooth_l1_loss(
            diff, torch.zeros_like(diff), reduction="none", beta=self.options.beta
        )
        return _masked_sum(values, mask, denominator)


@dataclass
class PearsonOptions:
    """Options of the ``pearson`` loss.

    Attributes
    ----------
    eps : float
        Added to variances before the square root.
    mse_weight : float
        Adds this times the masked MSE (0: Pearson alone): correlation fixes
        a vertex's shape over images, the MSE its scale and offset.
    """

    eps: float = 1e-6
    mse_weight: float = 0.0

    def validate(self) -> None:
        if self.eps <= 0:
            raise ConfigError(f"'loss.eps' must be > 0; got {self.eps}")
        if self.mse_weight < 0:
            raise ConfigError(f"'loss.mse_weight' must be >= 0; got {self.mse_weight}")


@register_loss("pearson", PearsonOptions)
class PearsonLoss(Loss):
    """``1 - mean r``: per-vertex Pearson correlation over the batch's samples.

    Computed per subject (a vertex's correlation over that subject's samples in
    the batch, where the vertex is the subject's), then averaged over every
    (subject, vertex) pair with at least two samples. It does not decompose
    over samples: training refuses it with ``grad_accum > 1`` or under DDP.
    """

    decomposes = False

    def __call__(self, pred, target, mask, denominator=None, subject=None):
        pred, target = pred.float(), target.float()
        if subject is None:  # samples of one subject share a mask row
            subject = torch.unique(mask, dim=0, return_inverse=True)[1]
        total, count = pred.new_zeros(()), 0
        for g in torch.unique(subject).tolist():
            sel = (subject == g).nonzero().squeeze(1)
            if sel.numel() < 2:
                continue
            cols = mask[sel[0]].nonzero().squeeze(1)
            p = pred.index_select(0, sel).index_select(1, cols)
            t = target.index_select(0, sel).index_select(1, cols)
            p, t = p - p.mean(0), t - t.mean(0)
            r = (p * t).sum(0) / (
                (p.pow(2).sum(0) + self.options.eps).sqrt()
                * (t.pow(2).sum(0) + self.options.eps).sqrt()
            )
            total = total + r.sum()
            count += cols.numel()
        if count == 0:
            raise ValueError("the pearson loss needs at least two samples of one subject")
        loss = 1 - total / count
        if self.options.mse_weight:
            loss = loss + self.options.mse_weight * masked_mse(pred, target, mask, denominator)
        return loss
