"""The training loop: phase 1 (frozen trunk, optionally from a feature cache) and
phase 2 (fine-tuning), on one CPU, one GPU, or many processes under torchrun.

Reading order: :func:`train` gets everything from
:func:`~brainencoder.training.setup.setup_training`, then :func:`run_epochs` runs
epochs of steps and, at each epoch's end, a validation that keeps the best epoch
and stops early (:class:`~brainencoder.training.selection.BestEpoch`). ``adapt``
runs its epochs through the same :func:`run_epochs`. With ``num_workers`` > 0,
threads read and crop the next batches (:meth:`TrainStep.prepare
<brainencoder.training.step.TrainStep.prepare>`) while the current step runs.
Everything a resumed run needs is in the checkpoint, and the learning rate, the
data order, the crops and the cached views are pure functions of (seed, epoch,
step), so neither a resume nor the worker count changes the result.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..data.loader import EpochBatchSampler
from ..inference.store import split_stats, summarize_stats
from ..util.prefetch import prefetch
from .config import TrainConfig
from .distributed import barrier
from .selection import BestEpoch
from .setup import setup_training
from .state import TrainSetup, TrainState
from .step import lr_at

__all__ = ["Outcome", "lr_at", "run_epochs", "train"]

#: how :func:`run_epochs` ended: every epoch ran, early stopping, or ``stop_after_steps``
Outcome = Literal["finished", "stopped_early", "paused"]

logger = logging.getLogger(__name__)


class _Interrupt:
    """Turns SIGINT/SIGTERM into a flag checked between steps (when ``enabled``)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Interrupt:
        if not self.enabled:  # nothing to save: an interrupt stops at once
            return self
        with contextlib.suppress(ValueError):  # not the main thread
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("interrupt received: saving a checkpoint after this step")

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def train(
    config: TrainConfig,
    store_path: str | Path,
    run_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    stop_after_steps: int | None = None,
) -> dict[str, Any]:
    """Train an encoder; returns the run summary.

    Parameters
    ----------
    config : TrainConfig
    store_path : path
        Prepared store.
    run_dir : path
        Output folder (see :mod:`brainencoder.runs.checkpoint`).
    resume : bool, default=False
        Continue the run in ``run_dir`` from its latest checkpoint.
    overwrite : bool, default=False
        Replace whatever ``run_dir`` holds.
    progress : bool, optional
        Progress bar (default: on a terminal).
    stop_after_steps : int, optional
        Save a checkpoint and stop after this many optimizer steps (tests).

    Returns
    -------
    dict
        The summary also written to ``run_dir/summary.json``.
    """
    s = setup_training(config, store_path, run_dir, resume, overwrite, progress)
    selection = BestEpoch(
        metric=config.val_metric if config.validates else None,
        validate=lambda epoch: _val_metrics(s),
        keep=lambda metrics: _save_best(s, config, metrics),
        patience=config.early_stop_patience,
    )
    start_time = time.perf_counter()
    outcome = run_epochs(s, config, selection, progress, stop_after_steps)
    state, info = s.state, s.info
    if outcome == "paused":
        return {"stopped_at_step": state.step}
    summary = {
        "finished": True,
        "epochs_run": state.epoch,
        "steps": state.step,
        "best_epoch": state.best_epoch,
        config.val_metric: state.best,
        "trained_on": config.train_on,
        "stopped_early": outcome == "stopped_early",
        "world_size": info.world_size,
        "device": str(s.device),
        "seconds": time.perf_counter() - start_time,
        "trainable_parameters": s.n_trainable,
    }
    if info.is_main:
        s.run.write_summary(summary)
    barrier(info)
    return summary


def run_epochs(
    s: TrainSetup,
    config: TrainConfig,
    selection: BestEpoch,
    progress: bool | None = None,
    stop_after_steps: int | None = None,
    checkpoints: bool = True,
) -> Outcome:
    """Run the epochs of ``s`` from where its state stands: steps, then a selection each epoch.

    The one epoch loop of ``train`` and ``adapt``. Every step takes the learning
    rate of the schedule (:func:`lr_at`); ``config.log_every`` steps and every
    epoch end append a record to ``metrics.jsonl``; at each epoch's end
    ``selection`` validates, keeps a better model and says when to stop.

    Parameters
    ----------
    s : TrainSetup
        Its ``state`` advances as the run does.
    config : TrainConfig
        ``epochs``, the schedule (``lr``, ``warmup_frac``, ``min_lr_frac``),
        ``num_workers``, ``log_every`` and ``checkpoint_every``.
    selection : BestEpoch
    progress : bool, optional
        Progress bar (default: on a terminal).
    stop_after_steps : int, optional
        Stop after this many optimizer steps (with a checkpoint when ``checkpoints``).
    checkpoints : bool, default=True
        Save a resumable checkpoint at every epoch end, every ``checkpoint_every``
        steps and on SIGINT/SIGTERM (``adapt``, which cannot resume, saves none).

    Returns
    -------
    {"finished", "stopped_early", "paused"}
        All epochs ran, early stopping ended the run, or ``stop_after_steps`` did.
    """
    from tqdm.auto import tqdm

    state, info = s.state, s.info
    steps_per_epoch = len(s.sampler)
    total_steps = steps_per_epoch * config.epochs
    hide_bar = (not info.is_main) or (None if progress is None else not progress)
    jobs = _schedule(s.sampler, state, config.epochs)
    ready = prefetch(lambda job: s.step.prepare(*job), jobs, config.num_workers)
    tracking = contextlib.nullcontext() if s.tracker is None else s.tracker  # closed on leaving
    with _Interrupt(checkpoints) as interrupt, contextlib.closing(ready), tracking:
        while state.epoch < config.epochs:
            epoch, epoch_start, data_wait = state.epoch, time.perf_counter(), 0.0
            desc = f"epoch {epoch + 1}/{config.epochs}"
            with tqdm(
                total=steps_per_epoch, initial=state.batch_in_epoch, desc=desc, disable=hide_bar
            ) as bar:
                while state.batch_in_epoch < steps_per_epoch:
                    t0 = time.perf_counter()
                    batch = next(ready)  # read and cropped ahead by num_workers threads
                    data_wait += time.perf_counter() - t0
                    lr = lr_at(
                        state.step, total_steps, config.lr, config.warmup_frac, config.min_lr_frac
                    )
                    for group in s.optimizer.param_groups:
                        group["lr"] = lr
                    loss = s.step.run(batch)
                    state.step += 1
                    state.batch_in_epoch += 1
                    rate = batch.size * info.world_size / (time.perf_counter() - t0)
                    bar.update()
                    bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{rate:.0f}")
                    if state.step % config.log_every == 0:
                        record = {"step": state.step, "epoch": epoch, "lr": lr}
                        _log(s, {**record, "train/loss": loss, "samples_per_s": rate})
                    stop_now = stop_after_steps is not None and state.step >= stop_after_steps
                    every = config.checkpoint_every
                    due = interrupt.requested or stop_now or (every and state.step % every == 0)
                    if checkpoints and due:
                        _checkpoint(s, config)
                    if interrupt.requested:
                        raise KeyboardInterrupt(
                            f"saved a checkpoint in {s.run.checkpoints}; continue with --resume"
                        )
                    if stop_now:
                        return "paused"
            train_seconds = time.perf_counter() - epoch_start
            metrics = selection.end_epoch(state, epoch)  # a better epoch is kept
            name = selection.metric
            if name is not None and info.is_main:
                value = metrics[name]
                logger.info("epoch %d: %s = %.4f (best %.4f)", epoch + 1, name, value, state.best)
            state.epoch, state.batch_in_epoch = epoch + 1, 0  # the epoch ends here
            timing = {"epoch_seconds": train_seconds, "data_wait_seconds": data_wait}
            best = {} if state.best is None else {"best": state.best}
            _log(s, {"step": state.step, "epoch": epoch, **metrics, **best, **timing})
            if checkpoints:
                _checkpoint(s, config)
            if selection.should_stop(state):
                logger.info("early stopping: no improvement for %d epochs", selection.patience)
                return "stopped_early"
    return "finished"


def _schedule(
    sampler: EpochBatchSampler, start: TrainState, epochs: int
) -> Iterator[tuple[np.ndarray, int, int]]:
    """(positions, epoch, step) of every step left, from ``start`` to the last epoch's end.

    The loop's data prefetching reads this ahead, across epoch ends (the first
    batches of an epoch are prepared while the previous one validates).
    """
    first_epoch, first_batch, step = start.epoch, start.batch_in_epoch, start.step
    for epoch in range(first_epoch, epochs):
        sampler.set_epoch(epoch, first_batch if epoch == first_epoch else 0)
        for positions in sampler:
            yield positions, epoch, step
            step += 1


def _val_metrics(s: TrainSetup) -> dict[str, float]:
    """The model's validation metrics on the store's val split (every subject)."""
    return summarize_stats(split_stats(s.model, s.store, "val", s.cache), "val")


def _save_best(s: TrainSetup, config: TrainConfig, metrics: dict[str, float]) -> None:
    """Save the model as the run's best and its scores in ``best.json`` (rank 0)."""
    state = s.state
    if s.info.is_main:
        s.run.save_model(s.model, {"store_image_size": str(s.store.image_size)})
        best = {"epoch": state.best_epoch, "step": state.step, config.val_metric: state.best}
        s.run.write_json("best.json", {**best, **metrics})


def _log(s: TrainSetup, record: dict[str, Any]) -> None:
    """Append ``record`` to ``metrics.jsonl`` (and the trackers: TensorBoard, W&B) on rank 0."""
    if s.info.is_main:
        s.run.append_metrics(record)
        if s.tracker is not None:
            s.tracker.log(record)


def _checkpoint(s: TrainSetup, config: TrainConfig) -> None:
    """Save a resumable checkpoint of the run as it stands (rank 0; all ranks wait)."""
    if s.info.is_main:
        state = {**s.state.to_dict(), "config": config.to_dict()}
        s.run.save_checkpoint(s.model, s.optimizer, s.scaler, state)
    barrier(s.info)
