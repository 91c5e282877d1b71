"""On-disk cache of frozen-trunk features.

With a frozen trunk, phase 1 only trains the head: extracting the chosen
layers' feature maps once (memory-mapped) makes each epoch cost the head
alone. A cache holds ``n_views`` views of every training image: view 0 is the
plain resized image (used for validation), views 1.. are seeded
random-resized crops (augmentation). Layout::

    CACHE/<key>/plan.json        what is being extracted
    CACHE/<key>/layerN.f16       float16 (n_views, n_images, C, *positions), or
    CACHE/<key>/layerN.i8        int8 values and
    CACHE/<key>/layerN.scale     float32 scales (n_views, n_images, C): x = q * scale
    CACHE/<key>/chunks/*.done    finished (view, chunk) markers
    CACHE/<key>/manifest.json    written last: the cache is complete

``key`` hashes the store, the trunk's weights and layers, the input size, the
view settings and the dtype, so a cache is never reused for something else.
A model with several trunks (``model.trunks``) has one cache per trunk, keyed
on that trunk alone (:func:`feature_sources`), read together as a
:class:`~.cache_files.MultiFeatureCache`; the files are read by
:mod:`.cache_files`.

Several processes (``torchrun`` ranks) extract one cache together: each takes
every ``count``-th (view, chunk) job (:class:`CacheOptions`'s ``shard``),
writes its rows into the shared preallocated files and its own markers; the
first process writes the manifest once every marker exists. The bytes do not
depend on how many processes wrote them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..data.store import Store
from ..data.transforms import random_resized_crop, resize
from ..models.encoder import Encoder
from ..models.multi_trunk import TrunkSet
from ..util.errors import StoreError
from ..util.fileio import check_free_space, read_json, write_json_atomic
from ..util.prefetch import prefetch
from .cache_files import FeatureCache, InMemoryFeatures, MultiFeatureCache, layer_files, open_layers
from .quantize import bytes_per_view, check_features, quantize_int8

__all__ = [
    "CACHE_DTYPES",
    "CacheOptions",
    "CacheSpec",
    "FeatureCache",
    "InMemoryFeatures",
    "MultiFeatureCache",
    "build_feature_cache",
    "feature_sources",
]

logger = logging.getLogger(__name__)
_CHUNK = 64
CACHE_DTYPES = ("float16", "int8")


@dataclass
class FeatureSource:
    """What one cache is extracted from: a trunk of ``model`` (or its only one).

    Attributes
    ----------
    model : Encoder
        Moved to the device and set to eval mode for the extraction.
    forward : callable
        Images in [0, 1], (B, 3, S, S) at ``model.input_size`` -> list of maps.
    shapes : list of tuple of int
        (C, *positions) of each map.
    key : dict
        What the maps depend on besides the images (enters the cache's key).
    """

    model: Encoder
    forward: Callable[[torch.Tensor], list[torch.Tensor]]
    shapes: list[tuple[int, ...]]
    key: dict


def _trunk_key(trunk: torch.nn.Module, indices: list[int]) -> dict:
    digest = hashlib.sha256()
    for name, tensor in trunk.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return {"trunk": digest.hexdigest(), "layers": list(indices)}


def feature_sources(model: Encoder) -> list[FeatureSource]:
    """One source per cache: the model's trunk, or each member of its ``model.trunks``.

    A member's key is that of a model with this trunk alone at the model's
    input size (so such a model and this one share the cache), plus its own
    input size where the member resizes the images further.
    """
    if not isinstance(model.trunk, TrunkSet):
        key = {**_trunk_key(model.trunk, model.trunk.indices), "input_size": model.input_size}
        if model.config.prefix_tokens:  # other shapes (caches without them keep their key)
            key["prefix_tokens"] = True
        if model.config.trunk_family != "timm":  # its architecture and mean/std are config
            key["trunk_config"] = json.dumps(model.config.trunk_kwargs, sort_keys=True)
        shapes = [tuple(s) for s in model.feature_shapes]
        return [FeatureSource(model, model.forward_features, shapes, key)]
    sources, start = [], 0
    for i, member in enumerate(model.trunk.members):
        key = {**_trunk_key(member, member.indices), "input_size": model.input_size}
        entry = model.config.trunks[i]
        if entry.get("prefix_tokens"):
            key["prefix_tokens"] = True
        if member.family != "timm":
            key["trunk_config"] = json.dumps(member.model_kwargs, sort_keys=True)
        if member.input_size != model.input_size:
            key["trunk_input_size"] = member.input_size
        count = model.trunk.groups[i]
        shapes = [tuple(s) for s in model.feature_shapes[start : start + count]]
        start += count
        sources.append(FeatureSource(model, partial(model.trunk.member_features, i), shapes, key))
    return sources


def _marker(path: Path, job: tuple[int, int]) -> Path:
    """The file that says the (view, first row) chunk ``job`` is extracted."""
    view, start = job
    return path / "chunks" / f"{view}-{start:08d}.done"


@dataclass(frozen=True)
class CacheSpec:
    """What a feature cache holds: every field enters its key (:func:`build_feature_cache`)."""

    n_views: int = 1  # view 0 the resized image, views 1.. seeded random-resized crops
    crop_scale: tuple[float, float] = (0.8, 1.0)  # area range of the crops
    seed: int = 0
    batch_size: int = _CHUNK  # images per extracted chunk
    # int8: one float32 scale per (view, image, channel), half the size; get() dequantizes
    dtype: Literal["float16", "int8"] = "float16"


@dataclass(frozen=True)
class CacheOptions:
    """How this process extracts a cache (none of it changes the cache's bytes)."""

    device: str | torch.device = "cpu"
    progress: bool | None = None  # a progress bar (default: on a terminal)
    # (index, count): this process extracts every count-th job from index; every process of
    # the group calls build_feature_cache with the same arguments but its own index
    shard: tuple[int, int] = (0, 1)
    sync: Callable[[], None] | None = None  # a barrier across the processes (for count > 1)
    workers: int = 2  # threads reading and cropping the next batches while the trunk runs


@torch.no_grad()
def build_feature_cache(
    model: Encoder,
    store: Store,
    image_rows: np.ndarray,
    spec: CacheSpec | None = None,
    *,
    root: str | Path | None = None,
    options: CacheOptions | None = None,
) -> FeatureCache | MultiFeatureCache:
    """Extract (or finish extracting) the trunk features of ``image_rows``.

    A model with several trunks (``model.trunks``) gets one cache per trunk,
    each keyed on its trunk alone (:func:`feature_sources`): adding a trunk
    to a model reuses the other trunks' caches.

    Parameters
    ----------
    model : Encoder
        Its trunk and input size are used (in eval mode).
    store : Store
    image_rows : ndarray of int64
        Store image rows to cache (e.g. every training image of every subject).
    spec : CacheSpec, optional
        Views, crops, seed, chunk size and dtype; default ``CacheSpec()``.
    root : path, optional
        Folder of caches; default ``<store>/features``.
    options : CacheOptions, optional
        Device, progress bar, this process's shard and barrier, reading threads.

    Returns
    -------
    FeatureCache, or MultiFeatureCache of one FeatureCache per trunk
    """
    spec, options = spec or CacheSpec(), options or CacheOptions()
    index, count = options.shard
    if not 0 <= index < count or (count > 1 and options.sync is None):
        raise ValueError(f"shard {options.shard} needs 0 <= index < count and a sync for count > 1")
    if spec.dtype not in CACHE_DTYPES:
        raise StoreError(f"cache dtype must be one of {CACHE_DTYPES}; got {spec.dtype!r}")
    image_rows = np.unique(np.asarray(image_rows, dtype=np.int64))
    folder = Path(root) if root is not None else store.path / "features"
    caches = [
        _build_one(source, store, image_rows, spec, folder, options)
        for source in feature_sources(model)
    ]
    return caches[0] if len(caches) == 1 else MultiFeatureCache(caches)


def _build_one(
    source: FeatureSource,
    store: Store,
    image_rows: np.ndarray,
    spec: CacheSpec,
    folder: Path,
    options: CacheOptions,
) -> FeatureCache:
    """The cache of one source in ``folder`` (see :func:`build_feature_cache`)."""
    index = options.shard[0]
    barrier = options.sync or (lambda: None)
    key_src = _key_source(source, store, image_rows, spec)
    key = hashlib.sha256(repr(sorted(key_src.items())).encode()).hexdigest()[:16]
    path = folder / key
    if (path / "manifest.json").exists():
        return FeatureCache(path)
    if index == 0:
        plan = json.loads(json.dumps({"key": key_src, "shapes": source.shapes}))  # as read back
        _prepare_files(path, plan, image_rows, spec.n_views, spec.dtype)
    barrier()
    chunks = range(0, image_rows.size, spec.batch_size)
    jobs = [(v, s) for v in range(spec.n_views) for s in chunks]
    _extract(source, store, image_rows, path, spec, options, jobs)
    barrier()
    if index == 0:
        _finish(path, jobs, source.shapes, spec.n_views, image_rows, key_src, spec.dtype)
    barrier()
    return FeatureCache(path)


def _key_source(
    source: FeatureSource, store: Store, image_rows: np.ndarray, spec: CacheSpec
) -> dict:
    """Everything a cache's bytes depend on: the cache's key is their hash."""
    key_src = {
        "store": store.manifest["source"]["fingerprint"],
        "store_path": str(Path(store.path).resolve()),  # one cache whatever the spelling
        "image_size": store.image_size,
        **source.key,
        "n_views": spec.n_views,
        "crop_scale": list(spec.crop_scale),
        "seed": spec.seed,
        "chunk": spec.batch_size,
        "n_images": int(image_rows.size),
        "rows": hashlib.sha256(image_rows.tobytes()).hexdigest(),
    }
    if spec.dtype != "float16":  # float16 caches keep the key they always had
        key_src["dtype"] = spec.dtype
    return key_src


def _load_chunk(store, image_rows, size, spec, pin, job) -> torch.Tensor:
    """The trunk's input for the (view, first row) chunk ``job``: resized, or a seeded crop."""
    view, start = job
    images = torch.from_numpy(store.read_images(image_rows[start : start + spec.batch_size]))
    if view == 0:
        x = resize(images, size)
    else:
        gen = torch.Generator().manual_seed(
            int(np.random.SeedSequence([spec.seed, view, start]).generate_state(1)[0])
        )
        x = random_resized_crop(images, size, tuple(spec.crop_scale), gen)
    return x.pin_memory() if pin else x


def _extract(source, store, image_rows, path, spec, options, jobs) -> None:
    """Extract this process's share of ``jobs`` not marked done into the files at ``path``."""
    from tqdm.auto import tqdm

    index, count = options.shard
    model, shapes = source.model, source.shapes
    layers, scales = open_layers(path, shapes, spec.n_views, image_rows.size, spec.dtype, "r+")
    mine = jobs[index::count]
    todo = [job for job in mine if not _marker(path, job).exists()]
    if count > 1:
        msg = "feature cache: process %d of %d extracts %d of %d chunks (%d left)"
        logger.info(msg, index, count, len(mine), len(jobs), len(todo))
    was_training = model.training
    model.eval()
    model.to(options.device)
    pin = torch.device(options.device).type == "cuda"
    load = partial(_load_chunk, store, image_rows, model.input_size, spec, pin)
    off = None if options.progress is None else not options.progress
    done = len(mine) - len(todo)
    bar = tqdm(total=len(mine), initial=done, unit="batch", desc="cache features", disable=off)
    for (view, start), x in zip(todo, prefetch(load, todo, options.workers)):
        feats = source.forward(x.to(options.device, non_blocking=True))
        stop = start + x.shape[0]
        where = f"store rows {image_rows[start]}..{image_rows[stop - 1]}"
        check_features(feats, spec.dtype, where)
        _write_chunk(layers, scales, feats, (view, start, stop), spec.dtype)
        _marker(path, (view, start)).touch()
        bar.update()
    bar.close()
    model.train(was_training)


def _write_chunk(layers, scales, feats, where, dtype) -> None:
    """Write one chunk's features (``where``: view, first row, end row); flush the files."""
    view, start, stop = where
    for i, f in enumerate(feats):
        if dtype == "int8":
            q, scale = quantize_int8(f)
            layers[i][view, start:stop] = q.cpu().numpy()
            scales[i][view, start:stop] = scale.cpu().numpy()
        else:
            layers[i][view, start:stop] = f.to(torch.float16).cpu().numpy()
    for arr in (*layers, *scales):
        arr.flush()


def _prepare_files(
    path: Path, plan: dict, image_rows: np.ndarray, n_views: int, dtype: str
) -> None:
    """Create (or reuse, if it was for the same plan) the preallocated cache files."""
    shapes = plan["shapes"]
    needed = bytes_per_view(shapes, dtype) * image_rows.size * n_views
    logger.info(
        "feature cache %s: %d images x %d views, %s, %.2f GiB",
        path,
        image_rows.size,
        n_views,
        dtype,
        needed / 2**30,
    )
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise StoreError(
            f"{path}: cannot write the feature cache there ({exc.strerror or exc}); the store "
            "may be read-only: set cache_dir=A_WRITABLE_FOLDER"
        ) from None
    if (path / "plan.json").exists() and read_json(path / "plan.json") != plan:
        shutil.rmtree(path)
        path.mkdir(parents=True)
    if not (path / "plan.json").exists():
        check_free_space(path, needed, f"the feature cache {path}")
        layers, scales = open_layers(path, shapes, n_views, image_rows.size, dtype, "w+")
        del layers, scales  # the files exist at their full (sparse) size
        write_json_atomic(path / "plan.json", plan)
    (path / "chunks").mkdir(exist_ok=True)


def _finish(path, jobs, shapes, n_views, image_rows, key_src, dtype) -> None:
    """Check every job's marker, flush the files to disk, write the manifest."""
    missing = [job for job in jobs if not _marker(path, job).exists()]
    if missing:
        raise StoreError(
            f"{path}: {len(missing)} chunks were not extracted (a process failed); rerun "
            "training to finish the cache"
        )
    for i in range(len(shapes)):
        for f in layer_files(path, i, dtype):
            if f is not None:
                with open(f, "rb+") as fh:
                    os.fsync(fh.fileno())
    manifest = {"n_views": n_views, "shapes": shapes, "image_rows": image_rows.tolist()}
    write_json_atomic(path / "manifest.json", {**manifest, "key": key_src, "dtype": dtype})
    shutil.rmtree(path / "chunks", ignore_errors=True)
