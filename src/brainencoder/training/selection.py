"""Which epoch a run keeps, and when it stops: the best validation score, early stopping.

``train`` and ``adapt`` run their epochs through the same loop
(:func:`~brainencoder.training.loop.run_epochs`) and select the same way: after
each epoch a :class:`BestEpoch` validates, records a better score in the run's
:class:`~brainencoder.training.state.TrainState` (which checkpoints save, so a
resumed run goes on selecting where it stopped) and keeps the model as it stands.
``train`` keeps it as the run's best model file; ``adapt`` copies the parameters
it trains (:class:`BestParameters`) and puts the best copy back at the end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..util.errors import ConfigError

if TYPE_CHECKING:
    from .state import TrainState

__all__ = ["BestEpoch", "BestParameters"]


@dataclass
class BestEpoch:
    """Selects the epoch with the best validation score; stops after ``patience`` without one.

    Attributes
    ----------
    metric : str or None
        The metric of ``validate``'s result that selects (higher is better).
        None when nothing is held out (a run that trains on val): nothing is
        validated, and every epoch counts as the best (the last one is kept).
    validate : callable
        ``validate(epoch)``: the validation metrics after ``epoch`` (0-based).
    keep : callable
        ``keep(metrics)``: keep the model of a new best epoch (with its metrics).
    patience : int or None, default=None
        Stop after this many epochs without a better score (None: never).
    """

    metric: str | None
    validate: Callable[[int], dict[str, float]]
    keep: Callable[[dict[str, float]], None]
    patience: int | None = None

    def end_epoch(self, state: TrainState, epoch: int) -> dict[str, float]:
        """Validate after ``epoch``; a better score goes into ``state`` and is kept.

        Parameters
        ----------
        state : TrainState
            Its ``best``, ``best_epoch`` and ``epochs_since_best`` are updated.
        epoch : int

        Returns
        -------
        dict of str to float
            The validation metrics (empty when :attr:`metric` is None).

        Raises
        ------
        ConfigError
            When the metrics lack :attr:`metric`, or its value is not finite
            (nothing is kept then).
        """
        if self.metric is None:
            metrics: dict[str, float] = {}
            value, improved = None, True
        else:
            metrics = self.validate(epoch)
            value = self._value(metrics, epoch)
            improved = state.best is None or value > state.best
        if improved:
            state.best, state.best_epoch, state.epochs_since_best = value, epoch, 0
            self.keep(metrics)
        else:
            state.epochs_since_best += 1
        return metrics

    def should_stop(self, state: TrainState) -> bool:
        """Whether ``patience`` epochs have passed without a better score."""
        return self.patience is not None and state.epochs_since_best >= self.patience

    def _value(self, metrics: dict[str, float], epoch: int) -> float:
        if self.metric not in metrics:
            raise ConfigError(
                f"'val_metric' {self.metric!r} is not computed here; the validation metrics "
                f"are {sorted(metrics)}"
            )
        value = metrics[self.metric]
        if not math.isfinite(value):
            raise ConfigError(
                f"validation {self.metric} is {value} after epoch {epoch + 1}: the model's "
                "predictions are not finite; nothing was saved as best (lower lr, set grad_clip)"
            )
        return value


class BestParameters:
    """Copies of some parameters at the best epoch so far, put back by :meth:`restore`.

    Parameters
    ----------
    params : sequence of Tensor
        The parameters that train (the rest of the model does not change).
    """

    def __init__(self, params: Sequence[torch.Tensor]) -> None:
        self.params = list(params)
        self.saved: list[torch.Tensor] | None = None

    def keep(self, metrics: dict[str, float] | None = None) -> None:
        """Copy the parameters as they stand (the ``keep`` of a :class:`BestEpoch`)."""
        self.saved = [p.detach().clone() for p in self.params]

    def restore(self) -> None:
        """Put the kept copies back into the parameters (nothing to do before a :meth:`keep`)."""
        if self.saved is None:
            return
        with torch.no_grad():
            for p, value in zip(self.params, self.saved, strict=True):
                p.copy_(value)
