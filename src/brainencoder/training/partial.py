"""Training chosen parameters of an otherwise frozen model, or chosen rows of them.

``adapt`` trains a new subject's own parameters this way: the readout's
:meth:`~brainencoder.models.readouts.Readout.adapt_parameters` names them, each
as a whole (``axis`` None) or as the rows along ``axis`` of a tensor the
subjects share (a per-vertex tensor grown by the subject's vertices). Inside
:func:`rows_only` a gradient hook zeroes every other row, and AdamW never decays
a shared tensor (its decay would shrink every other row too), so everything
but the chosen rows stays bit-identical. :func:`setup_partial` builds what
:func:`~brainencoder.training.loop.run_epochs` needs, as
:func:`~brainencoder.training.setup.setup_training` does for ``train``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch

from ..data.loader import EpochBatchSampler, StoreBatches
from .config import TrainConfig
from .distributed import DistInfo
from .losses import create_loss
from .state import TrainSetup, TrainState
from .step import TrainStep

if TYPE_CHECKING:
    from ..data.store import Store
    from ..inference.cache import FeatureCache
    from ..models.encoder import Encoder
    from ..runs.run import Run

__all__ = ["Trained", "count_trained", "partial_optimizer", "rows_only", "setup_partial"]

#: the parameters that train, each whole (None) or the chosen rows along an axis
Trained = Sequence[tuple[torch.nn.Parameter, int | None]]


@contextlib.contextmanager
def rows_only(trained: Trained, rows: torch.Tensor) -> Iterator[None]:
    """Let ``trained`` get gradients, those along an axis only at ``rows``; undone on exit.

    Parameters
    ----------
    trained : sequence of (Parameter, int or None)
    rows : Tensor of int64
        Indices along each parameter's axis.
    """
    hooks = [_hook(p, axis, rows) for p, axis in trained]
    try:
        yield
    finally:
        for hook in hooks:
            if hook is not None:
                hook.remove()
        for p, _ in trained:
            p.requires_grad_(False)


def _hook(p: torch.nn.Parameter, axis: int | None, rows: torch.Tensor):
    """Make ``p`` trainable; for an ``axis``, a hook keeping only ``rows`` of its gradient."""
    p.requires_grad_(True)
    if axis is None:
        return None
    shape = [1] * p.ndim
    shape[axis] = p.shape[axis]
    keep = torch.zeros(p.shape[axis], dtype=p.dtype, device=p.device)
    keep[rows.to(p.device)] = 1
    keep = keep.view(shape)
    return p.register_hook(lambda grad: grad * keep)


def count_trained(trained: Trained, n_rows: int) -> int:
    """The numbers that train: whole parameters, and ``n_rows`` rows of the others."""
    return sum(
        p.numel() if axis is None else p.numel() // p.shape[axis] * n_rows for p, axis in trained
    )


def partial_optimizer(trained: Trained, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over ``trained``: ``weight_decay`` on whole parameters, none on shared ones."""
    return torch.optim.AdamW(
        [
            {
                "params": [p for p, axis in trained if axis is None],
                "weight_decay": config.weight_decay,
            },
            # rows of shared tensors: AdamW's decay would shrink every other row too
            {"params": [p for p, axis in trained if axis is not None], "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=(config.betas[0], config.betas[1]),
    )


def setup_partial(
    run: Run,
    store: Store,
    model: Encoder,
    batches: StoreBatches,
    cache: FeatureCache,
    trained: Trained,
    n_rows: int,
    config: TrainConfig,
) -> TrainSetup:
    """What :func:`~brainencoder.training.loop.run_epochs` needs to train ``trained``.

    The readout of ``model`` trains from the cached features of ``batches``'
    images, on the CPU, in one process, with ``config``'s loss, batch size
    (the last, smaller batch of an epoch is kept: few images) and seed.

    Parameters
    ----------
    run : Run
        Where ``metrics.jsonl`` goes.
    store : Store
    model : Encoder
        Frozen and in eval mode but for ``trained`` (see :func:`rows_only`).
    batches : StoreBatches
        The training rows (and the vertices the loss leaves out).
    cache : FeatureCache
        Trunk features of their images.
    trained : sequence of (Parameter, int or None)
    n_rows : int
        Rows trained along an axis (for the count of trained numbers).
    config : TrainConfig

    Returns
    -------
    TrainSetup
        With a fresh :class:`TrainState` and no tracker.
    """
    info, device = DistInfo(), torch.device("cpu")
    optimizer = partial_optimizer(trained, config)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    step = TrainStep(
        module=model.readout,
        model=model.readout,
        batches=batches,
        cache=cache,
        loss=create_loss(config.loss),
        optimizer=optimizer,
        scaler=scaler,
        config=config,
        device=device,
        info=info,
    )
    sampler = EpochBatchSampler(len(batches.index), config.batch_size, config.seed, drop_last=False)
    return TrainSetup(
        run=run,
        store=store,
        model=model,
        batches=batches,
        cache=cache,
        sampler=sampler,
        optimizer=optimizer,
        scaler=scaler,
        step=step,
        state=TrainState(),
        info=info,
        device=device,
        n_trainable=count_trained(trained, n_rows),
    )
