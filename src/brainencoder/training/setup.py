"""Setting up a training run: device, run folder, model, data, feature cache, resume.

:func:`setup_training` does it all and returns a
:class:`~brainencoder.training.state.TrainSetup`, the small bundle the loop works
with; its :class:`~brainencoder.training.state.TrainState` (the loop's position)
comes fresh or from the latest checkpoint.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.loader import EpochBatchSampler, SampleIndex, StoreBatches, build_index
from ..data.store import Store
from ..inference.cache import CacheOptions, CacheSpec, FeatureCache, build_feature_cache
from ..models.encoder import Encoder, build_encoder
from ..models.lora import apply_lora, lora_layers
from ..models.modelfile import load_encoder, load_state, model_state, read_model_file
from ..models.multi_trunk import TrunkSet, cached_head, freeze_members, lora_parts, member_lora
from ..models.pca import GroupPCA, fit_group_pca, training_mean
from ..models.readouts.smoothness import check_smoothable
from ..models.trunk import apply_freeze
from ..runs.checkpoint import load_checkpoint
from ..runs.load import model_file
from ..runs.provenance import check_init_source, inherit, training_record
from ..runs.run import Run
from ..util.errors import CheckpointError, ConfigError, DataError
from .config import TrainConfig
from .distributed import DistInfo, barrier, init_distributed, sync_batchnorms
from .losses import create_loss
from .smoothing import surface_neighbours
from .state import TrainSetup, TrainState
from .step import TrainStep, amp_settings, make_optimizer
from .tracking import Tracker, require_trackers

__all__ = [
    "open_cache",
    "prepare_model",
    "prepare_run_dir",
    "resolve_device",
    "resume_state",
    "setup_training",
    "write_config",
]

logger = logging.getLogger(__name__)


def setup_training(
    config: TrainConfig,
    store_path: str | Path,
    run_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
) -> TrainSetup:
    """Validate the config, claim the run folder, build (or restore) everything a run needs.

    See :func:`~brainencoder.training.loop.train` for the parameters. On a fresh
    run rank 0 writes the run's header; when resuming, the model, optimizer,
    scaler, RNG states and :class:`TrainState` come from the latest checkpoint.
    """
    config.validate()
    require_trackers(config)  # every rank: a missing package stops them all, before any work
    loss = create_loss(config.loss)
    info = init_distributed(resolve_device(config.device, DistInfo()).type)
    device = resolve_device(config.device, info)
    if info.enabled and not loss.decomposes:
        raise ConfigError(
            f"loss {config.loss['name']!r} does not decompose over samples, so it would differ "
            f"across {info.world_size} processes: train it in one process or use mse / smooth_l1"
        )
    amp_dtype, use_scaler = amp_settings(config, device)  # fails early for impossible settings
    inputs = [store_path, config.init_from, config.pca_file, config.cache_dir]
    store = Store(store_path)
    record = training_record_of(config, store)  # an init_from that saw val: before any work
    edges = surface_neighbours(config, store)  # before the run folder is claimed
    run = prepare_run_dir(run_dir, resume, overwrite, info, inputs)
    np.random.seed(config.seed)  # noqa: NPY002 (for user code that uses it)
    ckpt = run.latest_checkpoint() if resume else None
    model, n_trainable = prepare_model(config, store, info, device, ckpt)
    model.training_record = record
    neighbours = None
    if edges is not None:
        check_smoothable(model.readout)  # an init_from model's readout, known only now
        neighbours = torch.as_tensor(edges, device=device)

    train_index = build_index(
        store, config.train_on, fraction=config.train_fraction, seed=config.seed
    )
    batches = StoreBatches(store, train_index)
    cache = open_cache(config, model, store, train_index, info, device, progress)
    trained: nn.Module = model if cache is None else cached_head(model)
    module = trained
    if info.enabled:
        module = nn.parallel.DistributedDataParallel(
            trained, device_ids=[device.index] if device.type == "cuda" else None
        )
    sampler = EpochBatchSampler(
        len(train_index), config.batch_size, config.seed, info.rank, info.world_size
    )
    optimizer = make_optimizer(trained, config, device)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    step = TrainStep(
        module=module,
        model=model,
        batches=batches,
        cache=cache,
        loss=loss,
        optimizer=optimizer,
        scaler=scaler,
        config=config,
        device=device,
        info=info,
        amp_dtype=amp_dtype,
        neighbours=neighbours,
        total_steps=len(sampler) * config.epochs,
    )
    state = TrainState()
    if ckpt is not None:
        state = resume_state(ckpt, run, model, optimizer, scaler, config, info)
    elif info.is_main:
        write_config(run, config, store, info)
    tracker = None
    if info.is_main:
        tracker = Tracker.open(config, run, resumed_at=state.step if ckpt is not None else None)
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
        state=state,
        info=info,
        device=device,
        n_trainable=n_trainable,
        tracker=tracker,
    )


def resolve_device(spec: str, info: DistInfo) -> torch.device:
    """``"auto"`` / ``"cpu"`` / ``"cuda[:i]"`` -> a device (this rank's GPU under DDP)."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"'device' must be auto, cpu, cuda or cuda:N; got {spec!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' asked for, but no CUDA device is available")
        if device.index is None:
            device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    return device


def prepare_run_dir(
    path: str | Path,
    resume: bool,
    overwrite: bool,
    info: DistInfo,
    inputs: list[str | Path | None] | None = None,
) -> Run:
    """Claim the run folder on rank 0 (see :meth:`Run.create`); every rank gets the Run.

    Only an empty folder or a run brainencoder wrote is replaced, never one that
    overlaps the ``inputs`` (store, initial model, PCA, cache folder).
    """
    if info.is_main:
        Run.create(path, inputs or [], overwrite=overwrite, resume=resume)
    barrier(info)
    return Run(path)


def training_record_of(config: TrainConfig, store: Store) -> dict:
    """What a run of ``config`` on ``store`` trains on, with its ``init_from`` model's record.

    Raises
    ------
    ConfigError
        ``init_from`` trained on the val images this run selects its epochs on.
    """
    record = training_record(store, store.names, config.train_on)
    if not config.init_from:
        return record
    source = Path(config.init_from)
    return inherit(record, check_init_source(source, store, selects_on_val=config.validates))


def _build_model(config: TrainConfig, store: Store) -> Encoder:
    """The initial model, or a new one built with what its readout ``needs`` from ``store``."""
    from ..models.readouts import ReadoutContext, readout_class

    if config.init_from:
        src = Path(config.init_from)
        path = model_file(src)
        model = load_encoder(path)
        if not model.space.same_as(store.space):
            raise ConfigError(
                f"{path}: the model's vertex space (subjects {model.space.subjects}, "
                f"{model.space.n_vertices} group vertices) is not the store's (subjects "
                f"{store.names}, {store.space.n_vertices} vertices, or other vertices or "
                "columns); initialize from a model trained on this data"
            )
        logger.info("initialized from %s", path)
        return model
    encoder_config = config.encoder_config()
    readout = encoder_config.readout
    needs = readout_class(readout["name"]).needs
    pca = regions = None
    if "pca" in needs:
        if config.pca_file:
            pca = GroupPCA.load(config.pca_file)
            if pca.mean.shape[0] != store.space.n_vertices:
                raise ConfigError(
                    f"{config.pca_file}: PCA of {pca.mean.shape[0]} vertices, but "
                    f"the store's group space has {store.space.n_vertices}"
                )
        else:
            pca = fit_group_pca(store, readout.get("latent_dim", 2048), seed=config.pca_seed)
    if "regions" in needs:
        regions = _store_regions(store, readout.get("roi_groups"), readout["name"])
    context = ReadoutContext(pca=pca, regions=regions)
    model = build_encoder(encoder_config, store.space, context)
    mean = pca.mean if pca is not None else training_mean(store)
    model.readout.initialize(torch.as_tensor(mean, dtype=torch.float32))  # start at the mean
    return model


def _store_regions(store: Store, groups: list[str] | None, readout: str = "roi_query"):
    """The region of every group vertex, from the ROI label files of the store's data."""
    from ..core.regions import DEFAULT_ROI_GROUPS, group_regions
    from ..data.layout import read_layout

    root = store.manifest["source"]["root"]
    try:
        layout = read_layout(root, store.names)
    except DataError as exc:
        raise DataError(
            f"the {readout} readout needs the ROI label files of the data the store "
            f"{store.path} was prepared from ({exc})"
        ) from None
    regions = group_regions(layout, store.space, groups or DEFAULT_ROI_GROUPS)
    logger.info("%d regions (+1 outside every ROI): %s", len(regions.names), regions.names)
    return regions


def prepare_model(
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
    model.train()  # loaded models come in eval mode
    model.set_trunk_mode(config.train_trunk, bn_eval=config.trunk_bn_eval)
    _trunk_training(config, model)
    if info.enabled:
        sync_batchnorms(model.readout, native=device.type == "cuda")
        if device.type == "cuda" and config.train_trunk:
            model.trunk = nn.SyncBatchNorm.convert_sync_batchnorm(model.trunk)
    model.to(device)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if n_trainable == 0:
        raise ConfigError("no trainable parameters: check train_trunk and freeze")
    return model, n_trainable


def _trunk_training(config: TrainConfig, model: Encoder) -> None:
    """LoRA layers (on the trunk, or the named or every member of ``model.trunks``), freezing."""
    lora, several = config.lora_config(), isinstance(model.trunk, TrunkSet)
    named = lora_parts(config.lora)[1] if config.lora is not None else None
    if named is not None and not several:
        raise ConfigError(
            "'lora.trunk' names one of model.trunks; this model has one trunk: drop lora.trunk"
        )
    if lora is not None:
        if not lora_layers(model.trunk):  # a resumed checkpoint brings its own
            if several:  # targets on the members' module names (recorded in checkpoints)
                lora = member_lora(model.trunk, lora, named)
            wrapped = apply_lora(model.trunk.model, lora)
            logger.info("LoRA rank %d on %d trunk layers", lora.rank, len(wrapped))
        elif model.lora_config is not None:
            lora = model.lora_config  # the checkpoint's resolved targets
        model.lora_config = lora
        for layer in lora_layers(model.trunk).values():
            layer.lora_a.requires_grad_(True)
            layer.lora_b.requires_grad_(True)
    if config.train_trunk and config.freeze:
        if several:  # each member's own (timm) parameter names
            frozen = freeze_members(model.trunk, config.freeze)
        else:
            frozen = apply_freeze(model.trunk.model, config.freeze)  # timm parameter names
        logger.info("froze %d trunk parameter tensors", len(frozen))


def open_cache(
    config: TrainConfig,
    model: Encoder,
    store: Store,
    train_index: SampleIndex,
    info: DistInfo,
    device: torch.device,
    progress: bool | None,
) -> FeatureCache | None:
    """The feature cache of the training rows in use plus the validation rows.

    Every rank extracts its share of the chunks: all ranks when the cache
    folder is shared (``cache_scope: shared``, a network filesystem), the ranks
    of each node for a folder per node (``cache_scope: node``; each node then
    extracts every row).
    """
    if not config.cache_features:
        return None
    rows = np.concatenate([train_index.image, build_index(store, "val").image])
    if config.cache_scope == "node":
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))
        shard = (info.local_rank, local_size)
    else:
        shard = (info.rank, info.world_size)
    spec = CacheSpec(
        n_views=config.cache_views,
        crop_scale=tuple(config.crop_scale),
        seed=config.seed,
        dtype=config.cache_dtype,
    )
    options = CacheOptions(
        device=device,
        progress=progress if info.is_main else False,
        shard=shard,
        sync=(lambda: barrier(info)) if info.enabled else None,
        workers=config.decode_workers,
    )
    return build_feature_cache(model, store, rows, spec, root=config.cache_dir, options=options)


def resume_state(
    ckpt: Path,
    run: Run,
    model: Encoder,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    config: TrainConfig,
    info: DistInfo,
) -> TrainState:
    """Restore checkpoint ``ckpt`` of ``run``; returns the training state."""
    tensors, _ = read_model_file(ckpt / "model.safetensors")
    load_state(model, model_state(tensors), ckpt)
    state = load_checkpoint(ckpt, optimizer, scaler)
    # neither threads nor trackers change the result
    saved, free = state.get("config"), {"num_workers": 0, "tensorboard": False, "wandb": False}
    current = config.to_dict()
    if isinstance(saved, dict):  # keys added since the checkpoint was saved, at their defaults
        defaults = TrainConfig().to_dict()
        saved = {
            **{k: v for k, v in current.items() if k not in saved and v == defaults[k]},
            **saved,
        }
    if not isinstance(saved, dict) or {**saved, **free} != {**current, **free}:
        raise CheckpointError(
            f"{ckpt}: the checkpoint was made with another config; resume "
            "with the same config and overrides"
        )
    if info.is_main:  # only rank 0 writes and logs
        run.truncate_metrics(state["step"])
        logger.info("resuming at epoch %d, step %d", state["epoch"], state["step"])
    return TrainState.from_dict(state)


def write_config(run: Run, config: TrainConfig, store: Store, info: DistInfo) -> None:
    """The run's header (model kind, version, git revision, store) and its resolved config."""
    run.write_header("encoder", store, config.to_dict(), world_size=info.world_size)
