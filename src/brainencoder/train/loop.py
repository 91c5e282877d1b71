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
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from .. import __version__
from ..data.loader import EpochBatchSampler, StoreBatches, build_index
from ..data.store import Store
from ..data.transforms import random_resized_crop
from ..errors import CheckpointError, ConfigError
from ..evaluation import split_stats, summarize_stats
from ..features import FeatureCache, build_feature_cache
from ..fileio import write_json_atomic
from ..models.encoder import (
    Encoder,
    create_encoder,
    load_encoder,
    load_state,
    read_model_file,
    save_encoder,
)
from ..models.trunk import apply_freeze
from ..pca import fit_group_pca
from .checkpoint import RunDir, git_revision
from .config import TrainConfig
from .distributed import DistInfo, barrier, init_distributed, sync_batchnorms

__all__ = ["lr_at", "train"]

logger = logging.getLogger(__name__)


def lr_at(
    step: int, total_steps: int, base_lr: float, warmup_frac: float, min_lr_frac: float
) -> float:
    """Learning rate at optimizer step ``step`` (0-based): linear warmup, cosine to a floor."""
    warmup = round(warmup_frac * total_steps)
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    floor = min_lr_frac * base_lr
    return floor + (base_lr - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _device(spec: str, info: DistInfo) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' asked for, but no CUDA device is available")
        if device.index is None:
            device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    return device


def _amp(config: TrainConfig, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, whether a gradient scaler is needed)."""
    mode = config.amp
    if mode == "auto":
        if device.type != "cuda":
            return None, False
        mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if mode == "none":
        return None, False
    if mode == "fp16" and device.type != "cuda":
        raise ConfigError("amp 'fp16' needs a CUDA device; use 'bf16' or 'none' on CPU")
    return (torch.bfloat16, False) if mode == "bf16" else (torch.float16, True)


def _param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on matrices (ndim >= 2), none on biases and norms."""
    decay = [p for p in module.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in module.parameters() if p.requires_grad and p.ndim < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _prepare_run_dir(run: RunDir, resume: bool, overwrite: bool, info: DistInfo) -> None:
    if info.is_main:
        has_ckpt = (run.checkpoints / "latest.json").exists()
        if resume:
            if run.finished:
                raise CheckpointError(f"{run.path}: the run already finished; nothing to resume")
            if not has_ckpt:
                raise CheckpointError(f"{run.path}: no checkpoint to resume from")
        elif run.path.exists() and any(run.path.iterdir()):
            if not overwrite:
                what = "a finished run" if run.finished else "an unfinished run"
                hint = "" if run.finished else " or --resume to continue it"
                raise CheckpointError(
                    f"{run.path} already holds {what}; pass --overwrite to replace it{hint}"
                )
            shutil.rmtree(run.path)
        run.path.mkdir(parents=True, exist_ok=True)
    barrier(info)


def _build_model(config: TrainConfig, store: Store) -> Encoder:
    if config.init_from:
        src = Path(config.init_from)
        path = RunDir(src).model_file() if src.is_dir() else src
        model = load_encoder(path)
        if model.space.subjects != store.names or model.space.n_vertices != (
            store.space.n_vertices
        ):
            raise ConfigError(
                f"{path}: model subjects {model.space.subjects} "
                f"({model.space.n_vertices} vertices) do not match the store's "
                f"{store.names} ({store.space.n_vertices} vertices)"
            )
        logger.info("initialized from %s", path)
        return model
    latent = config.model.get("latent_dim", None)
    from ..models.encoder import ENCODER_CONFIGS

    latent = latent if latent is not None else ENCODER_CONFIGS[config.encoder].latent_dim
    if config.pca_file:
        from ..pca import GroupPCA

        pca = GroupPCA.load(config.pca_file)
        if pca.mean.shape[0] != store.space.n_vertices:
            raise ConfigError(
                f"{config.pca_file}: PCA of {pca.mean.shape[0]} vertices, but "
                f"the store's group space has {store.space.n_vertices}"
            )
    else:
        pca = fit_group_pca(store, latent, seed=config.pca_seed)
    return create_encoder(config.encoder, store.space, pca, **config.model)


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
        Output folder (see :mod:`brainencoder.train.checkpoint`).
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
    device = _device(config.device, DistInfo())
    info = init_distributed(device.type)
    device = _device(config.device, info)
    amp_dtype, use_scaler = _amp(config, device)  # fails early for impossible settings
    run = RunDir(run_dir)
    _prepare_run_dir(run, resume, overwrite, info)
    store = Store(store_path)
    np.random.seed(config.seed)  # noqa: NPY002 (for user code that uses it)
    ckpt = run.latest_checkpoint() if resume else None
    model, n_trainable = _prepare_model(config, store, info, device, ckpt)

    train_index = build_index(store, "train", fraction=config.train_fraction, seed=config.seed)
    batches = StoreBatches(store, train_index)
    cache = _open_cache(config, model, store, train_index, info, device, progress)
    trained: nn.Module = model.head if cache is not None else model
    ddp: nn.Module = trained
    if info.enabled:
        ddp = nn.parallel.DistributedDataParallel(
            trained, device_ids=[device.index] if device.type == "cuda" else None
        )

    micro = config.batch_size // config.grad_accum
    sampler = EpochBatchSampler(
        len(train_index), config.batch_size, config.seed, info.rank, info.world_size
    )
    steps_per_epoch = len(sampler)
    total_steps = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(
        _param_groups(trained, config.weight_decay),
        lr=config.lr,
        betas=(0.9, 0.999),
        fused=device.type == "cuda",
    )
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)

    state: dict[str, Any] = {
        "epoch": 0,
        "batch_in_epoch": 0,
        "step": 0,
        "best": None,
        "best_epoch": None,
        "epochs_since_best": 0,
    }
    if ckpt is not None:
        state = _resume(ckpt, run, model, optimizer, scaler, config, info)
    elif info.is_main:
        _write_config(run, config, store_path, info)

    wandb_run = _wandb(config, run) if info.is_main else None

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
                loss = _step(
                    ddp,
                    model,
                    batches,
                    cache,
                    positions,
                    micro,
                    config,
                    epoch,
                    state["step"],
                    device,
                    amp_dtype,
                    scaler,
                    optimizer,
                    info,
                )
                state["step"] += 1
                state["batch_in_epoch"] += 1
                rate = len(positions) * info.world_size / (time.perf_counter() - t0)
                bar.update()
                bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{rate:.0f}")
                if state["step"] % config.log_every == 0:
                    log(
                        {
                            "step": state["step"],
                            "epoch": epoch,
                            "lr": lr,
                            "train/loss": loss,
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
        write_json_atomic(run.path / "summary.json", summary)
        if wandb_run is not None:
            wandb_run.finish()
    barrier(info)
    return summary


def _prepare_model(
    config: TrainConfig,
    store: Store,
    info: DistInfo,
    device: torch.device,
    checkpoint: Path | None = None,
) -> tuple[Encoder, int]:
    """Build or load the model, set what trains, sync BatchNorm under DDP, move it.

    When resuming, the architecture and the frozen PCA come from the checkpoint's
    model file, so the group PCA is not fitted again.
    """
    torch.manual_seed(config.seed)  # the same initial model on every rank
    if checkpoint is not None:
        model = load_encoder(checkpoint / "model.safetensors")
    else:
        model = _build_model(config, store)
    torch.manual_seed(config.seed + info.rank)  # per-rank dropout masks
    model.store_image_size = store.image_size
    for p in model.trunk.parameters():
        p.requires_grad_(config.train_trunk)
    if config.train_trunk and config.freeze:
        frozen = apply_freeze(model.trunk.model, config.freeze)  # timm parameter names
        logger.info("froze %d trunk parameter tensors", len(frozen))
    if info.enabled:
        sync_batchnorms(model.head)
        if device.type == "cuda" and config.train_trunk:
            model.trunk = nn.SyncBatchNorm.convert_sync_batchnorm(model.trunk)
    model.to(device)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if n_trainable == 0:
        raise ConfigError("no trainable parameters: check train_trunk and freeze")
    return model, n_trainable


def _open_cache(
    config: TrainConfig,
    model: Encoder,
    store: Store,
    train_index,
    info: DistInfo,
    device: torch.device,
    progress: bool | None,
) -> FeatureCache | None:
    """The feature cache of the training rows in use plus the validation rows (rank 0
    extracts; the other ranks open the finished cache)."""
    if not config.cache_features:
        return None
    rows = np.concatenate([train_index.image, build_index(store, "val").image])

    def build(**kwargs: Any) -> FeatureCache:
        return build_feature_cache(
            model,
            store,
            rows,
            config.cache_views,
            tuple(config.crop_scale),
            config.seed,
            config.cache_dir,
            **kwargs,
        )

    cache = build(device=device, progress=progress) if info.is_main else None
    barrier(info)
    return cache if info.is_main else build()


def _resume(
    ckpt: Path,
    run: RunDir,
    model: Encoder,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    config: TrainConfig,
    info: DistInfo,
) -> dict[str, Any]:
    """Restore checkpoint ``ckpt`` of ``run``; returns the training state."""
    tensors, _ = read_model_file(ckpt / "model.safetensors")
    load_state(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, ckpt)
    state = run.load_checkpoint(ckpt, optimizer, scaler)
    if state.get("config") != config.to_dict():
        raise CheckpointError(
            f"{ckpt}: the checkpoint was made with another config; resume "
            "with the same config and overrides"
        )
    if info.is_main:
        run.truncate_metrics(state["step"])
    logger.info("resuming at epoch %d, step %d", state["epoch"], state["step"])
    return state


def _validate(
    model: Encoder,
    store: Store,
    cache: FeatureCache | None,
    config: TrainConfig,
    state: dict[str, Any],
    epoch: int,
    run: RunDir,
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
    state["epoch"] += 1
    state["batch_in_epoch"] = 0
    if state["best"] is None or value > state["best"]:
        state.update(best=value, best_epoch=epoch, epochs_since_best=0)
        if info.is_main:
            save_encoder(
                model, run.path / "best.safetensors", {"store_image_size": str(store.image_size)}
            )
            write_json_atomic(
                run.path / "best.json",
                {"epoch": epoch, "step": state["step"], config.val_metric: value, **metrics},
            )
    else:
        state["epochs_since_best"] += 1
    return metrics, value


def _step(
    ddp: nn.Module,
    model: Encoder,
    batches: StoreBatches,
    cache: FeatureCache | None,
    positions: np.ndarray,
    micro: int,
    config: TrainConfig,
    epoch: int,
    step: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    scaler: torch.amp.GradScaler,
    optimizer: torch.optim.Optimizer,
    info: DistInfo,
) -> float:
    """One optimizer step over ``positions`` (this rank's share of the global batch)."""
    from ..models.encoder import masked_mse

    micro_local = max(1, micro // info.world_size)
    chunks = [positions[i : i + micro_local] for i in range(0, len(positions), micro_local)]
    # normalize by the vertex count of the whole global batch, so that micro-batches and
    # DDP ranks (whose gradients DDP averages) add up to the global masked MSE exactly
    count = torch.tensor(float(batches.n_vertices[batches.index.subject[positions]].sum()))
    if info.enabled:
        torch.distributed.all_reduce(count)
    denominator = count.item() / info.world_size
    total = 0.0
    for i, chunk in enumerate(chunks):
        target, mask = batches.targets(chunk)
        subject = torch.from_numpy(batches.index.subject[chunk]).to(device)
        sync = i == len(chunks) - 1 or not info.enabled
        ctx = contextlib.nullcontext() if sync else ddp.no_sync()
        with (
            ctx,
            torch.autocast(
                device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
            ),
        ):
            if cache is not None:
                views = np.random.default_rng([config.seed, epoch, 7]).integers(
                    cache.n_views, size=len(batches.index)
                )[chunk]
                feats = cache.get(views, cache.lookup(batches.index.image[chunk]))
                pred = ddp([f.to(device, non_blocking=True) for f in feats], subject)
            else:
                gen = torch.Generator().manual_seed(
                    int(
                        np.random.SeedSequence([config.seed, step, i, info.rank]).generate_state(1)[
                            0
                        ]
                    )
                )
                images = random_resized_crop(
                    batches.images(chunk), model.input_size, tuple(config.crop_scale), gen
                ).to(device)
                if not config.train_trunk:
                    model.trunk.eval()
                elif config.trunk_bn_eval:
                    for module in model.trunk.modules():
                        if isinstance(module, nn.modules.batchnorm._BatchNorm):
                            module.eval()
                pred = ddp(images, subject)
            loss = masked_mse(pred, target.to(device), mask.to(device), denominator)
        scaler.scale(loss).backward()
        total += float(loss.detach()) / info.world_size
    if info.enabled:  # the logged loss is the global batch's
        reduced = torch.tensor(total)
        torch.distributed.all_reduce(reduced)
        total = reduced.item()
    if config.grad_clip:
        scaler.unscale_(optimizer)
        params = [p for g in optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return total


def _write_config(run: RunDir, config: TrainConfig, store_path: str | Path, info: DistInfo) -> None:
    header = {
        "brainencoder_version": __version__,
        "git_revision": git_revision(),
        "store": str(Path(store_path).absolute()),
        "world_size": info.world_size,
        "torch_version": str(torch.__version__),
    }
    text = yaml.safe_dump({"run": header, **config.to_dict()}, sort_keys=False)
    from ..fileio import write_bytes_atomic

    write_bytes_atomic(run.path / "config.yaml", text.encode())


def _wandb(config: TrainConfig, run: RunDir) -> Any:
    if not config.wandb:
        return None
    try:
        import wandb
    except ImportError:
        raise ConfigError("wandb: true needs the wandb package; pip install wandb") from None
    return wandb.init(
        project="brainencoder", dir=str(run.path), config=config.to_dict(), name=run.path.name
    )
