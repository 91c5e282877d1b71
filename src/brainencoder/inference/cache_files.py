"""Reading feature caches: one trunk's cache files, several trunks' caches side by side.

:class:`FeatureCache` opens one complete cache (see :mod:`.cache` for its
layout), :class:`MultiFeatureCache` joins the caches of the trunks of one
model (``model.trunks``: one cache per trunk, so that a trunk's cache serves
every model that has it), :class:`InMemoryFeatures` offers the same interface
over tensors in memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..util.errors import StoreError
from ..util.fileio import read_json

__all__ = ["FeatureCache", "InMemoryFeatures", "MultiFeatureCache", "layer_files", "open_layers"]


def layer_files(path: Path, index: int, dtype: str) -> tuple[Path, Path | None]:
    """The values file of layer ``index`` of a cache and its scales file (int8) or None."""
    if dtype == "int8":
        return path / f"layer{index}.i8", path / f"layer{index}.scale"
    return path / f"layer{index}.f16", None


class FeatureCache:
    """A complete feature cache, opened read-only.

    Attributes
    ----------
    layers : list of memory-mapped ndarray, shape (n_views, n_images, C, *positions)
        float16 values, or int8 values with ``scales``.
    scales : list of ndarray of float32, shape (n_views, n_images, C), or None
    dtype : {"float16", "int8"}
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
        self.dtype = manifest.get("dtype", "float16")
        self.layers, scales = open_layers(
            self.path, self.shapes, self.n_views, self.image_rows.size, self.dtype, "r"
        )
        self.scales = scales if self.dtype == "int8" else None

    def lookup(self, store_rows: np.ndarray) -> np.ndarray:
        """Cache rows of store image rows (all must be cached)."""
        pos = np.searchsorted(self.image_rows, store_rows)
        if (pos >= self.image_rows.size).any() or (
            self.image_rows[np.minimum(pos, self.image_rows.size - 1)] != store_rows
        ).any():
            raise StoreError(f"{self.path}: some images are not in the feature cache")
        return pos

    def get(self, views: np.ndarray, rows: np.ndarray) -> list[torch.Tensor]:
        """Features of (view, cache row) pairs as float32 tensors (B, C, *positions) per layer.

        int8 caches are dequantized here, batch by batch.
        """
        if self.scales is None:
            return [
                torch.from_numpy(np.asarray(layer[views, rows], dtype=np.float32))
                for layer in self.layers
            ]
        out = []
        for layer, scale in zip(self.layers, self.scales):
            q = torch.from_numpy(np.asarray(layer[views, rows]))
            s = torch.from_numpy(np.asarray(scale[views, rows]))
            out.append(q.float() * s.view(*s.shape, *([1] * (q.ndim - 2))))
        return out


def open_layers(
    path: Path, shapes: list[tuple[int, ...]], n_views: int, n_images: int, dtype: str, mode: str
) -> tuple[list[np.memmap], list[np.memmap]]:
    """Memory maps of a cache's layer files (values, int8 scales): (n_views, n_images, ...)."""
    layers, scales = [], []
    for i, shape in enumerate(shapes):
        values, scale = layer_files(path, i, dtype)
        np_dtype = np.int8 if dtype == "int8" else np.float16
        layers.append(
            np.memmap(values, dtype=np_dtype, mode=mode, shape=(n_views, n_images, *shape))
        )
        if scale is not None:
            scales.append(
                np.memmap(scale, dtype=np.float32, mode=mode, shape=(n_views, n_images, shape[0]))
            )
    return layers, scales


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


class MultiFeatureCache:
    """The caches of several trunks of one model, read as one (maps trunk after trunk).

    Parameters
    ----------
    caches : list of FeatureCache
        One per trunk, of the same images and views.

    Attributes
    ----------
    caches : list of FeatureCache
    layers : list of memory-mapped ndarray
        Every trunk's layers, trunk after trunk.
    """

    def __init__(self, caches: list[FeatureCache]) -> None:
        first = caches[0]
        for other in caches[1:]:
            if other.n_views != first.n_views or not np.array_equal(
                other.image_rows, first.image_rows
            ):
                raise StoreError(
                    f"{other.path}: this trunk's feature cache holds other images or views "
                    f"than {first.path}; delete both folders and rerun training"
                )
        self.caches = list(caches)
        self.n_views, self.image_rows, self.dtype = first.n_views, first.image_rows, first.dtype
        self.path = first.path.parent
        self.layers = [layer for c in caches for layer in c.layers]
        self.shapes = [shape for c in caches for shape in c.shapes]

    def lookup(self, store_rows: np.ndarray) -> np.ndarray:
        """Cache rows of store image rows (all must be cached)."""
        return self.caches[0].lookup(store_rows)

    def get(self, views: np.ndarray, rows: np.ndarray) -> list[torch.Tensor]:
        """Every trunk's features of (view, cache row) pairs: float32 (B, C, *positions) each."""
        return [f for c in self.caches for f in c.get(views, rows)]
