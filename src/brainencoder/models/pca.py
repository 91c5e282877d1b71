"""Group PCA of the training fMRI of all subjects, in group space.

The data matrix stacks every subject's training rows in group space (rows:
images, columns: group vertices). A subject's missing vertices are treated as
missing, not as zeros: the mean of each vertex is taken over the subjects
that have it, and after centring the missing entries are 0, i.e. mean
imputation, which is neutral for the covariance. The fit is a randomized SVD
(Halko, Martinsson & Tropp 2011) that streams blocks of rows from the store
(read with ``preadv``, not through its memory maps, so the pages read stay out
of the process): only (n_rows x (k + p)) and (n_vertices x (k + p)) matrices
are held in memory, never the full data. When the centred matrix is small (below
``max_dense_bytes``) an exact SVD is used instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.store import Store
from ..util.errors import ConfigError, DataError
from ..util.fileio import atomic_path
from ..util.typecheck import check_seed

__all__ = ["GroupPCA", "fit_group_pca", "resolve_n_components", "training_mean"]

logger = logging.getLogger(__name__)


@dataclass
class GroupPCA:
    """Result of :func:`fit_group_pca`.

    Attributes
    ----------
    components : ndarray of float32, shape (n_components, n_group_vertices)
        Orthonormal rows, sorted by explained variance.
    mean : ndarray of float32, shape (n_group_vertices,)
    explained_variance : ndarray of float32, shape (n_components,)
    n_samples : int
        Rows used in the fit.
    """

    components: np.ndarray
    mean: np.ndarray
    explained_variance: np.ndarray
    n_samples: int

    def save(self, path: str | Path) -> None:
        """Write to a safetensors file atomically."""
        from safetensors.numpy import save_file

        with atomic_path(path, suffix=".safetensors") as tmp:
            save_file(
                {
                    "components": self.components,
                    "mean": self.mean,
                    "explained_variance": self.explained_variance,
                },
                str(tmp),
                metadata={"n_samples": json.dumps(self.n_samples)},
            )

    @classmethod
    def load(cls, path: str | Path) -> GroupPCA:
        """Read a file written by :meth:`save`."""
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="np") as fh:
                arrays = {k: fh.get_tensor(k) for k in fh.keys()}
                meta = fh.metadata() or {}
            return cls(
                arrays["components"],
                arrays["mean"],
                arrays["explained_variance"],
                int(json.loads(meta["n_samples"])),
            )
        except (OSError, KeyError, ValueError, SafetensorError) as exc:
            raise DataError(
                f"{path}: not a readable group PCA file ({exc}); it may be truncated: "
                "run 'brainencoder pca' again"
            ) from None


def resolve_n_components(
    requested: int | str, n_samples: int, n_vertices: int, auto_max: int = 2048
) -> int:
    """Check or choose the number of components.

    ``"auto"`` gives ``min(auto_max, n_samples, n_vertices)``; an integer
    larger than ``min(n_samples, n_vertices)`` is an error naming both.
    """
    limit = min(n_samples, n_vertices)
    if requested == "auto":
        return min(auto_max, limit)
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
        raise ConfigError(f"'latent_dim' must be a positive int or 'auto'; got {requested!r}")
    if requested > limit:
        raise ConfigError(
            f"cannot fit {requested} PCA components from {n_samples} training samples and "
            f"{n_vertices} group vertices (at most {limit}); lower latent_dim or set "
            "latent_dim: auto"
        )
    return requested


def _subject_blocks(
    store: Store, split: str, chunk: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (group columns, float32 row block) of every subject's rows of ``split``."""
    for name in store.names:
        rows = store.split_rows(name, split)
        cols = store.space.subject_columns(name)
        for start in range(0, rows.size, chunk):
            yield cols, store.read_fmri(name, rows[start : start + chunk])


def _row_blocks(store: Store, split: str, mean: np.ndarray, chunk: int) -> Iterator[np.ndarray]:
    """Yield centred group-space row blocks, shape (n, n_group); missing vertices are 0."""
    for cols, block in _subject_blocks(store, split, chunk):
        out = np.zeros((block.shape[0], store.space.n_vertices), dtype=np.float32)
        out[:, cols] = block - mean[cols]
        yield out


def training_mean(store: Store, split: str = "train", chunk_rows: int = 2048) -> np.ndarray:
    """Every group vertex's mean response over the ``split`` rows of the subjects that have it.

    The mean the group PCA centres with (and a new readout starts at), float32
    of shape (n_vertices,); a vertex no subject has is 0.
    """
    n_vertices = store.space.n_vertices
    counts = np.zeros(n_vertices, dtype=np.float64)
    sums = np.zeros(n_vertices, dtype=np.float64)
    for cols, block in _subject_blocks(store, split, chunk_rows):
        sums[cols] += block.sum(0, dtype=np.float64)
        counts[cols] += block.shape[0]
    return (sums / np.maximum(counts, 1)).astype(np.float32)


def fit_group_pca(
    store: Store,
    n_components: int | str = 2048,
    split: str = "train",
    seed: int = 0,
    n_oversamples: int = 16,
    n_iter: int = 4,
    chunk_rows: int = 2048,
    max_dense_bytes: int = 2**30,
) -> GroupPCA:
    """Fit the group PCA on the store's training rows of all subjects.

    Parameters
    ----------
    store : Store
    n_components : int or "auto", default=2048
        See :func:`resolve_n_components`.
    split : str, default="train"
        Rows to use; the val and testval rows stay unseen.
    seed : int, default=0
        Seed of the random test matrix; the result is deterministic.
    n_oversamples : int, default=16
    n_iter : int, default=4
        Power iterations of the randomized SVD (each adds two passes over the data).
    chunk_rows : int, default=2048
        Rows read at a time.
    max_dense_bytes : int, default=2**30
        Use an exact SVD of the dense centred matrix when it (float32) is no
        larger than this; 0 always streams.

    Returns
    -------
    GroupPCA
    """
    seed = check_seed("seed", seed)
    n_vertices = store.space.n_vertices
    n_samples = int(sum(len(store.split_rows(n, split)) for n in store.names))
    mean = training_mean(store, split, chunk_rows)
    k = resolve_n_components(n_components, n_samples, n_vertices)
    width = min(k + n_oversamples, n_samples, n_vertices)
    gen = torch.Generator().manual_seed(int(seed))
    omega = torch.randn(n_vertices, width, generator=gen)

    def times(right: torch.Tensor) -> torch.Tensor:  # X @ right, (n_samples, width)
        return torch.cat(
            [torch.from_numpy(b) @ right for b in _row_blocks(store, split, mean, chunk_rows)]
        )

    def t_times(left: torch.Tensor) -> torch.Tensor:  # X.T @ left, (n_vertices, width)
        acc = torch.zeros(n_vertices, left.shape[1])
        start = 0
        for b in _row_blocks(store, split, mean, chunk_rows):
            acc += torch.from_numpy(b).t() @ left[start : start + b.shape[0]]
            start += b.shape[0]
        return acc

    logger.info("group PCA: %d components from %d rows x %d vertices", k, n_samples, n_vertices)
    if n_samples * n_vertices * 4 <= max_dense_bytes:
        blocks = _row_blocks(store, split, mean, chunk_rows)
        dense = torch.cat([torch.from_numpy(b) for b in blocks]).double()
        _, s, vt = torch.linalg.svd(dense, full_matrices=False)
    else:
        y = times(omega)
        for _ in range(n_iter):
            q, _ = torch.linalg.qr(y)
            z, _ = torch.linalg.qr(t_times(q))
            y = times(z)
        q, _ = torch.linalg.qr(y)
        b = t_times(q).t()  # (width, n_vertices) = Q.T X
        _, s, vt = torch.linalg.svd(b.double(), full_matrices=False)
    vt = vt[:k]
    # deterministic signs: the largest-magnitude entry of each component is positive
    signs = torch.sign(vt.gather(1, vt.abs().argmax(1, keepdim=True)))
    vt = vt * signs
    return GroupPCA(
        components=vt.float().numpy(),
        mean=mean,
        explained_variance=(s[:k] ** 2 / max(n_samples - 1, 1)).float().numpy(),
        n_samples=n_samples,
    )
