"""The training loop: phase 1 (frozen trunk, optionally from a feature cache) and
phase 2 (fine-tuning), on one CPU, one GPU, or many processes under torchrun.

Reading order: :func:`train` sets up the run (directory, model, data, optimizer,
resume), then runs epochs of :func:`_train_epoch` and validation; everything a
resumed run needs is in the checkpoint, and the learning rate, the data order,
the crops and the cached views are pure functions of (seed, epoch, step).
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.loader import EpochBatchSampler, StoreBatches, build_index
from ..data.store import Store
from ..inference.cache import FeatureCache
from ..inference.store import split_stats, summarize_stats
from ..models.encoder import Encoder
from ..runs.run import Run
from ..util.errors import ConfigError
from .config import TrainConfig
from .distributed import DistInfo, barrier, init_distributed
from .losses import create_loss
from .setup import (
    open_cache,
    open_wandb,
    prepare_model,
    prepare_run_dir,
    resolve_device,
    resume_state,
    write_config,
)
from .step import TrainStep, amp_settings, lr_at, make_optimizer

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

    config.validate()
    loss = create_loss(config.loss)
    device = resolve_device(config.device, DistInfo())
    info = init_distributed(device.type)
    device = resolve_device(config.device, info)
    if info.enabled and not loss.decomposes:
        raise ConfigError(
            f"loss {config.loss['name']!r} does not decompose over samples, so it would differ "
            f"across {info.world_size} processes: train it in one process or use mse / smooth_l1"
        )
    amp_dtype, use_scaler = amp_settings(config, device)  # fails early for impossible settings
    inputs = [store_path, config.init_from, config.pca_file, config.cache_dir]
    run = prepare_run_dir(run_dir, resume, overwrite, info, inputs)
    store = Store(store_path)
    np.random.seed(config.seed)  # noqa: NPY002 (for user code that uses it)
    ckpt = run.latest_checkpoint() if resume else None
    model, n_trainable = prepare_model(config, store, info, device, ckpt)

    train_index = build_index(store, "train", fraction=config.train_fraction, seed=config.seed)
    batches = StoreBatches(store, train_index)
    cache = open_cache(config, model, store, train_index, info, device, progress)
    trained: nn.Module = model.readout if cache is not None else model
    ddp: nn.Module = trained
    if info.enabled:
        ddp = nn.parallel.DistributedDataParallel(
            trained, device_ids=[device.index] if device.type == "cuda" else None
        )

    sampler = EpochBatchSampler(
        len(train_index), config.batch_size, config.seed, info.rank, info.world_size
    )
    steps_per_epoch = len(sampler)
    total_steps = steps_per_epoch * config.epochs
    optimizer = make_optimizer(trained, config, device)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    train_step = TrainStep(
        ddp, model, batches, cache, loss, optimizer, scaler, config, device, info, amp_dtype
    )

    state: dict[str, Any] = {
        "epoch": 0,
        "batch_in_epoch": 0,
        "step": 0,
        "best": None,
        "best_epoch": None,
        "epochs_since_best": 0,
    }
    if ckpt is not None:
        state = resume_state(ckpt, run, model, optimizer, scaler, config, info)
    elif info.is_main:
        write_config(run, config, store, info)

    wandb_run = open_wandb(config, run) if info.is_main else None

    def checkpoint() -> None:
        if info.is_main:
            state["config"] = config.to_dict()
            run.save_checkpoint(model, optimizer, scaler, state)
        barrier(info)

    def log(record: dict[str, Any]) -> None:
        if info.is_main:
            run.append_metrics(record)
            if wandb_run is not None:
                wandb_run.log(record, step=record["step"])

    start_time = time.perf_counter()
    stopped_early = False
    with _Interrupt() as interrupt:
        while state["epoch"] < config.epochs:
            epoch = state["epoch"]
            sampler.set_epoch(epoch, state["batch_in_epoch"])
            epoch_start = time.perf_counter()
            bar = tqdm(
                total=steps_per_epoch,
                initial=state["batch_in_epoch"],
                desc=f"epoch {epoch + 1}/{config.epochs}",
                unit="step",
                disable=(not info.is_main) or (None if progress is None else not progress),
            )
            for positions in sampler:
                t0 = time.perf_counter()
                lr = lr_at(
                    state["step"], total_steps, config.lr, config.warmup_frac, config.min_lr_frac
                )
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss_value = train_step(positions, epoch, state["step"])
                state["step"] += 1
                state["batch_in_epoch"] += 1
                rate = len(positions) * info.world_size / (time.perf_counter() - t0)
                bar.update()
                bar.set_postfix(loss=f"{loss_value:.4f}", samples_s=f"{rate:.0f}")
                if state["step"] % config.log_every == 0:
                    log(
                        {
                            "step": state["step"],
                            "epoch": epoch,
                            "lr": lr,
                            "train/loss": loss_value,
                            "samples_per_s": rate,
                        }
                    )
                stop_now = stop_after_steps is not None and state["step"] >= stop_after_steps
                if (
                    interrupt.requested
                    or stop_now
                    or (config.checkpoint_every and state["step"] % config.checkpoint_every == 0)
                ):
                    checkpoint()
                if interrupt.requested:
                    bar.close()
                    raise KeyboardInterrupt(
                        f"saved a checkpoint in {run.checkpoints}; continue with --resume"
                    )
                if stop_now:
                    bar.close()
                    return {"stopped_at_step": state["step"]}
            bar.close()
            train_seconds = time.perf_counter() - epoch_start
            metrics, value = _validate(model, store, cache, config, state, epoch, run, info)
            log(
                {
                    "step": state["step"],
                    "epoch": epoch,
                    **metrics,
                    "best": state["best"],
                    "epoch_seconds": train_seconds,
                }
            )
            if info.is_main:
                logger.info(
                    "epoch %d: %s = %.4f (best %.4f at epoch %d)",
                    epoch + 1,
                    config.val_metric,
                    value,
                    state["best"],
                    state["best_epoch"] + 1,
                )
            checkpoint()
            if (
                config.early_stop_patience is not None
                and state["epochs_since_best"] >= config.early_stop_patience
            ):
                logger.info(
                    "early stopping: no improvement for %d epochs", state["epochs_since_best"]
                )
                stopped_early = True
                break

    summary = {
        "finished": True,
        "epochs_run": state["epoch"],
        "steps": state["step"],
        "best_epoch": state["best_epoch"],
        config.val_metric: state["best"],
        "stopped_early": stopped_early,
        "world_size": info.world_size,
        "device": str(device),
        "seconds": time.perf_counter() - start_time,
        "trainable_parameters": n_trainable,
    }
    if info.is_main:
        run.write_summary(summary)
        if wandb_run is not None:
            wandb_run.finish()
    barrier(info)
    return summary


def _validate(
    model: Encoder,
    store: Store,
    cache: FeatureCache | None,
    config: TrainConfig,
    state: dict[str, Any],
    epoch: int,
    run: Run,
    info: DistInfo,
) -> tuple[dict[str, float], float]:
    """Validation metrics of the epoch; updates ``state`` and saves a new best model."""
    metrics = summarize_stats(split_stats(model, store, "val", cache), "val")
    if config.val_metric not in metrics:
        raise ConfigError(
            f"'val_metric' {config.val_metric!r} is not computed for this store "
            f"(subjects {store.names})"
        )
    value = metrics[config.val_metric]
    if not math.isfinite(value):
        raise ConfigError(
            f"validation {config.val_metric} is {value} after epoch {epoch + 1}: the model's "
            "predictions are not finite; nothing was saved as best (lower lr, set grad_clip)"
        )
    state["epoch"] += 1
    state["batch_in_epoch"] = 0
    if state["best"] is None or value > state["best"]:
        state.update(best=value, best_epoch=epoch, epochs_since_best=0)
        if info.is_main:
            run.save_model(model, {"store_image_size": str(store.image_size)})
            run.write_json(
                "best.json",
                {"epoch": epoch, "step": state["step"], config.val_metric: value, **metrics},
            )
    else:
        state["epochs_since_best"] += 1
    return metrics, value
