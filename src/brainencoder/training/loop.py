"""The training loop: phase 1 (frozen trunk, optionally from a feature cache) and
phase 2 (fine-tuning), on one CPU, one GPU, or many processes under torchrun.

Reading order: :func:`train` gets everything from
:func:`~brainencoder.training.setup.setup_training`, then runs epochs of steps and
a validation at each epoch's end. With ``num_workers`` > 0, threads read and
crop the next batches (:meth:`TrainStep.prepare
<brainencoder.training.step.TrainStep.prepare>`) while the current step runs.
Everything a resumed run needs is in the checkpoint, and the learning rate, the
data order, the crops and the cached views are pure functions of (seed, epoch,
step), so neither a resume nor the worker count changes the result.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..data.loader import EpochBatchSampler
from ..inference.store import split_stats, summarize_stats
from ..util.errors import ConfigError
from ..util.prefetch import prefetch
from .config import TrainConfig
from .distributed import barrier
from .setup import setup_training
from .state import TrainSetup, TrainState
from .step import lr_at

__all__ = ["lr_at", "train"]

logger = logging.getLogger(__name__)


class _Interrupt:
    """Turns SIGINT/SIGTERM into a flag checked between steps."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Interrupt:
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
    from tqdm.auto import tqdm

    s = setup_training(config, store_path, run_dir, resume, overwrite, progress)
    state, info = s.state, s.info
    steps_per_epoch = len(s.sampler)
    total_steps = steps_per_epoch * config.epochs
    hide_bar = (not info.is_main) or (None if progress is None else not progress)

    start_time = time.perf_counter()
    stopped_early = False
    jobs = _schedule(s.sampler, state, config.epochs)
    ready = prefetch(lambda job: s.step.prepare(*job), jobs, config.num_workers)
    tracking = contextlib.nullcontext() if s.tracker is None else s.tracker  # closed on leaving
    with _Interrupt() as interrupt, contextlib.closing(ready), tracking:
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
                    if interrupt.requested or stop_now or (every and state.step % every == 0):
                        _checkpoint(s, config)
                    if interrupt.requested:
                        raise KeyboardInterrupt(
                            f"saved a checkpoint in {s.run.checkpoints}; continue with --resume"
                        )
                    if stop_now:
                        return {"stopped_at_step": state.step}
            train_seconds = time.perf_counter() - epoch_start
            if config.validates:
                metrics, value = _validate(s, config, epoch)
                improved = state.best is None or value > state.best
            else:  # trained on the val split too: nothing to select on, the last epoch is kept
                metrics, value, improved = {}, None, True
            if improved:
                state.best, state.best_epoch, state.epochs_since_best = value, epoch, 0
                _save_best(s, config, metrics)
            else:
                state.epochs_since_best += 1
            state.epoch, state.batch_in_epoch = epoch + 1, 0  # the epoch ends here
            timing = {"epoch_seconds": train_seconds, "data_wait_seconds": data_wait}
            best = {} if state.best is None else {"best": state.best}
            _log(s, {"step": state.step, "epoch": epoch, **metrics, **best, **timing})
            _checkpoint(s, config)
            patience = config.early_stop_patience
            if patience is not None and state.epochs_since_best >= patience:
                logger.info("early stopping: no improvement for %d epochs", patience)
                stopped_early = True
                break

    summary = {
        "finished": True,
        "epochs_run": state.epoch,
        "steps": state.step,
        "best_epoch": state.best_epoch,
        config.val_metric: state.best,
        "trained_on": config.train_on,
        "stopped_early": stopped_early,
        "world_size": info.world_size,
        "device": str(s.device),
        "seconds": time.perf_counter() - start_time,
        "trainable_parameters": s.n_trainable,
    }
    if info.is_main:
        s.run.write_summary(summary)
    barrier(info)
    return summary


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


def _validate(s: TrainSetup, config: TrainConfig, epoch: int) -> tuple[dict[str, float], float]:
    """Validation metrics after ``epoch`` and the value of ``config.val_metric`` among them.

    Raises
    ------
    ConfigError
        When the store does not give that metric, or it is not finite.
    """
    metrics = summarize_stats(split_stats(s.model, s.store, "val", s.cache), "val")
    if config.val_metric not in metrics:
        raise ConfigError(
            f"'val_metric' {config.val_metric!r} is not computed for this store "
            f"(subjects {s.store.names})"
        )
    value = metrics[config.val_metric]
    if not math.isfinite(value):
        raise ConfigError(
            f"validation {config.val_metric} is {value} after epoch {epoch + 1}: the model's "
            "predictions are not finite; nothing was saved as best (lower lr, set grad_clip)"
        )
    if s.info.is_main:
        best = value if s.state.best is None else max(value, s.state.best)
        logger.info("epoch %d: %s = %.4f (best %.4f)", epoch + 1, config.val_metric, value, best)
    return metrics, value


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
