"""What the training loop holds: its position in the run (:class:`TrainState`, which a
checkpoint's ``state.json`` stores) and what it works with (:class:`TrainSetup`,
built by :func:`~brainencoder.training.setup.setup_training` for ``train`` and by
:func:`~brainencoder.training.partial.setup_partial` for ``adapt``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from ..data.loader import EpochBatchSampler, StoreBatches
    from ..data.store import Store
    from ..inference.cache import FeatureCache
    from ..models.encoder import Encoder
    from ..runs.run import Run
    from .distributed import DistInfo
    from .step import TrainStep
    from .tracking import Tracker

__all__ = ["TrainSetup", "TrainState"]


@dataclass
class TrainState:
    """Where a run stands; saved in every checkpoint's ``state.json``.

    Attributes
    ----------
    epoch : int
        The epoch under way (0-based; ``epochs`` when the run is done).
    batch_in_epoch : int
        Batches of that epoch already trained.
    step : int
        Optimizer steps taken.
    best : float or None
        Best validation score so far (None for a run that trains on val).
    best_epoch : int or None
        The epoch that scored it (the last one, for a run that trains on val).
    epochs_since_best : int
        Epochs validated since then (early stopping). The three are kept by
        :class:`~brainencoder.training.selection.BestEpoch`.
    """

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    best: float | None = None
    best_epoch: int | None = None
    epochs_since_best: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (in the checkpoint's key order)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        """The state of a checkpoint's ``state.json`` (other keys are ignored)."""
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{k: data[k] for k in names if k in data})


@dataclass
class TrainSetup:
    """What the training loop works with, built by :func:`setup_training` (or ``setup_partial``).

    Attributes
    ----------
    run : Run
        The run folder (every file goes through it).
    store : Store
    model : Encoder
        The unwrapped encoder (saved, validated, checkpointed).
    batches : StoreBatches
    cache : FeatureCache or None
        Trunk features of the training and validation images (phase 1).
    sampler : EpochBatchSampler
    optimizer, scaler : torch.optim.Optimizer, torch.amp.GradScaler
    step : TrainStep
    state : TrainState
        Fresh, or restored from the latest checkpoint when resuming.
    info, device : DistInfo, torch.device
    n_trainable : int
    tracker : Tracker or None
        TensorBoard and/or Weights & Biases, fed every ``metrics.jsonl`` record
        (rank 0, when ``tensorboard`` or ``wandb`` is true).
    """

    run: Run
    store: Store
    model: Encoder
    batches: StoreBatches
    cache: FeatureCache | None
    sampler: EpochBatchSampler
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    step: TrainStep
    state: TrainState
    info: DistInfo
    device: torch.device
    n_trainable: int
    tracker: Tracker | None = None
