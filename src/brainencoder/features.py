"""On-disk cache of frozen-trunk features.

With a frozen trunk, phase 1 only trains the head: extracting the chosen
layers' feature maps once (float16, memory-mapped) makes each epoch cost the
head alone. A cache holds ``n_views`` views of every training image: view 0
is the plain resized image (used for validation), views 1.. are seeded
random-resized crops (augmentation). Layout::

    CACHE/<key>/plan.json        what is being extracted
    CACHE/<key>/layerN.f16       float16 (n_views, n_images, C, H, W)
    CACHE/<key>/chunks/*.done    finished (view, chunk) markers
    CACHE/<key>/manifest.json    written last: the cache is complete

``key`` hashes the store, the trunk's weights and layers, the input size and
the view settings, so a cache is never reused for something else.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from .data.store import Store
from .data.transforms import random_resized_crop, resize
from .errors import StoreError
from .fileio import check_free_space, read_json, write_json_atomic
from .models.encoder import Encoder

__all__ = ["FeatureCache", "InMemoryFeatures", "build_feature_cache", "estimate_cache_bytes"]

logger = logging.getLogger(__name__)
_CHUNK = 64


def _trunk_digest(model: Encoder) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.trunk.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def estimate_cache_bytes(model: Encoder, n_images: int, n_views: int) -> int:
    """Bytes a cache of ``n_images`` x ``n_views`` takes (float16)."""
    per_image = sum(int(np.prod(s)) for s in model.feature_shapes) * 2
    return per_image * n_images * n_views


class FeatureCache:
    """A complete feature cache, opened read-only.

    Attributes
    ----------
    layers : list of ndarray of float16, shape (n_views, n_images, C, H, W)
    image_rows : ndarray of int64, shape (n_images,)
        Store image rows held, sorted; :meth:`lookup` maps store rows to cache rows.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / "manifest.json").exists():
            raise StoreError(
                f"{self.path}: feature cache is incomplete; rerun training with "
                "cache_features: true to finish it"
            )
        manifest = read_json(self.path / "manifest.json", "feature cache manifest")
        self.n_views = int(manifest["n_views"])
        self.image_rows = np.asarray(manifest["image_rows"], dtype=np.int64)
        self.shapes = [tuple(s) for s in manifest["shapes"]]
        self.layers = [
            np.memmap(
                self.path / f"layer{i}.f16",
                dtype=np.float16,
                mode="r",
                shape=(self.n_views, self.image_rows.size, *shape),
            )
            for i, shape in enumerate(self.shapes)
        ]

    def lookup(self, store_rows: np.ndarray) -> np.ndarray:
        """Cache rows of store image rows (all must be cached)."""
        pos = np.searchsorted(self.image_rows, store_rows)
        if (pos >= self.image_rows.size).any() or (
            self.image_rows[np.minimum(pos, self.image_rows.size - 1)] != store_rows
        ).any():
            raise StoreError(f"{self.path}: some images are not in the feature cache")
        return pos

    def get(self, views: np.ndarray, rows: np.ndarray) -> list[torch.Tensor]:
        """Features of (view, cache row) pairs as float32 tensors (B, C, H, W) per layer."""
        return [
            torch.from_numpy(np.asarray(layer[views, rows], dtype=np.float32))
            for layer in self.layers
        ]


class InMemoryFeatures:
    """The :class:`FeatureCache` interface over tensors in memory (benchmarks, tests).

    Parameters
    ----------
    layers : list of Tensor of shape (n_views, n_images, C, *positions)
        Cache row ``i`` is image row ``i``.
    """

    def __init__(self, layers: list[torch.Tensor]) -> None:
        self.layers = layers
        self.n_views = int(layers[0].shape[0])

    def lookup(self, store_rows: np.ndarray) -> np.ndarray:
        return np.asarray(store_rows)

    def get(self, views: np.ndarray, rows: np.ndarray) -> list[torch.Tensor]:
        v, r = torch.from_numpy(np.asarray(views)), torch.from_numpy(np.asarray(rows))
        return [layer[v, r].float() for layer in self.layers]


@torch.no_grad()
def build_feature_cache(
    model: Encoder,
    store: Store,
    image_rows: np.ndarray,
    n_views: int = 1,
    crop_scale: tuple[float, float] = (0.8, 1.0),
    seed: int = 0,
    root: str | Path | None = None,
    batch_size: int = _CHUNK,
    device: str | torch.device = "cpu",
    progress: bool | None = None,
) -> FeatureCache:
    """Extract (or finish extracting) the trunk features of ``image_rows``.

    Parameters
    ----------
    model : Encoder
        Its trunk and input size are used (in eval mode).
    store : Store
    image_rows : ndarray of int64
        Store image rows to cache (e.g. every training image of every subject).
    n_views : int, default=1
    crop_scale : (float, float), default=(0.8, 1.0)
        Area range of the crops of views 1..n_views-1.
    seed : int, default=0
    root : path, optional
        Folder of caches; default ``<store>/features``.
    batch_size : int, default=64
    device : str or torch.device, default="cpu"
    progress : bool, optional

    Returns
    -------
    FeatureCache
    """
    from tqdm.auto import tqdm

    image_rows = np.unique(np.asarray(image_rows, dtype=np.int64))
    key_src = {
        "store": store.manifest["source"]["fingerprint"],
        "store_path": str(Path(store.path).resolve()),  # one cache whatever the spelling
        "image_size": store.image_size,
        "trunk": _trunk_digest(model),
        "layers": model.trunk.indices,
        "input_size": model.input_size,
        "n_views": n_views,
        "crop_scale": list(crop_scale),
        "seed": seed,
        "chunk": batch_size,
        "n_images": int(image_rows.size),
        "rows": hashlib.sha256(image_rows.tobytes()).hexdigest(),
    }
    key = hashlib.sha256(repr(sorted(key_src.items())).encode()).hexdigest()[:16]
    path = Path(root) if root is not None else store.path / "features"
    path = path / key
    if (path / "manifest.json").exists():
        return FeatureCache(path)
    shapes = [tuple(s) for s in model.feature_shapes]
    needed = estimate_cache_bytes(model, image_rows.size, n_views)
    logger.info(
        "feature cache %s: %d images x %d views, %.2f GiB",
        path,
        image_rows.size,
        n_views,
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
    plan = {"key": key_src, "shapes": shapes}
    if (path / "plan.json").exists() and read_json(path / "plan.json") != plan:
        shutil.rmtree(path)
        path.mkdir(parents=True)
    if not (path / "plan.json").exists():
        check_free_space(path, needed, f"the feature cache {path}")
        for i, shape in enumerate(shapes):
            with open(path / f"layer{i}.f16", "wb") as fh:
                fh.truncate(n_views * image_rows.size * int(np.prod(shape)) * 2)
        write_json_atomic(path / "plan.json", plan)
    (path / "chunks").mkdir(exist_ok=True)
    layers = [
        np.memmap(
            path / f"layer{i}.f16",
            dtype=np.float16,
            mode="r+",
            shape=(n_views, image_rows.size, *shape),
        )
        for i, shape in enumerate(shapes)
    ]
    was_training = model.training
    model.eval()
    model.to(device)
    jobs = [(v, s) for v in range(n_views) for s in range(0, image_rows.size, batch_size)]
    todo = [(v, s) for v, s in jobs if not (path / "chunks" / f"{v}-{s:08d}.done").exists()]
    bar = tqdm(
        total=len(jobs),
        initial=len(jobs) - len(todo),
        unit="batch",
        desc="cache features",
        disable=None if progress is None else not progress,
    )
    for view, start in todo:
        rows = image_rows[start : start + batch_size]
        images = torch.from_numpy(store.read_images(rows))
        if view == 0:
            x = resize(images, model.input_size)
        else:
            gen = torch.Generator().manual_seed(
                int(np.random.SeedSequence([seed, view, start]).generate_state(1)[0])
            )
            x = random_resized_crop(images, model.input_size, tuple(crop_scale), gen)
        feats = model.forward_features(x.to(device))
        for layer, f in zip(layers, feats):
            layer[view, start : start + len(rows)] = f.to(torch.float16).cpu().numpy()
        for layer in layers:
            layer.flush()
        (path / "chunks" / f"{view}-{start:08d}.done").touch()
        bar.update()
    bar.close()
    model.train(was_training)
    for i in range(len(shapes)):
        with open(path / f"layer{i}.f16", "rb+") as fh:
            os.fsync(fh.fileno())
    write_json_atomic(
        path / "manifest.json",
        {"n_views": n_views, "shapes": shapes, "image_rows": image_rows.tolist(), "key": key_src},
    )
    shutil.rmtree(path / "chunks", ignore_errors=True)
    return FeatureCache(path)
