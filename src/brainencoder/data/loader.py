"""Batches of (images, subject, group-space targets, masks) from a store.

Batches mix subjects. :class:`EpochBatchSampler` draws a permutation that
depends only on (seed, epoch), splits each global batch across DDP ranks, and
can start at any batch of an epoch, so that a resumed run sees exactly the
batches an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..core.space import GroupSpace
from ..util.errors import ConfigError
from .store import Store

__all__ = ["ArrayBatches", "EpochBatchSampler", "SampleIndex", "StoreBatches", "build_index"]


@dataclass
class SampleIndex:
    """Flat list of samples across subjects.

    Attributes
    ----------
    subject : ndarray of int64, shape (n_samples,)
        Subject index (position in ``store.names``).
    row : ndarray of int64, shape (n_samples,)
        Row of the subject's training fMRI.
    image : ndarray of int64, shape (n_samples,)
        Row of ``store.images``.
    """

    subject: np.ndarray
    row: np.ndarray
    image: np.ndarray

    def __len__(self) -> int:
        return int(self.subject.size)


def build_index(
    store: Store,
    split: str | Sequence[str],
    subjects: Sequence[str] | None = None,
    fraction: float = 1.0,
    seed: int = 0,
) -> SampleIndex:
    """Samples of ``split`` ('train', 'val', 'testval', 'all', or several) of the given subjects.

    ``fraction`` < 1 keeps a seeded random subset of each subject's rows of
    each split.
    """
    from .splits import subsample

    splits = [split] if isinstance(split, str) else list(split)
    parts = []
    for name in subjects or store.names:
        info = store.subject(name)
        rows = np.concatenate(
            [subsample(store.split_rows(name, s), fraction, seed, name) for s in splits]
        )
        parts.append((np.full(rows.size, info.index), rows, info.train_rows[rows]))
    return SampleIndex(*(np.concatenate(p).astype(np.int64) for p in zip(*parts)))


class EpochBatchSampler:
    """Global batches of a seeded per-epoch permutation, split across ranks.

    Parameters
    ----------
    n_samples : int
    batch_size : int
        Global batch size (all ranks together).
    seed : int
    rank, world_size : int, default=0, 1
    shuffle : bool, default=True
    drop_last : bool, default=True
        Drop the last incomplete batch (training); keep it for evaluation.
    """

    def __init__(
        self,
        n_samples: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        drop_last: bool = True,
    ) -> None:
        if batch_size % world_size:
            raise ConfigError(
                f"batch size {batch_size} must be divisible by the number of processes {world_size}"
            )
        if drop_last and n_samples < batch_size:
            raise ConfigError(
                f"batch size {batch_size} is larger than the {n_samples} training "
                "samples; lower batch_size"
            )
        self.n_samples, self.batch_size, self.seed = n_samples, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's permutation and the first batch to yield."""
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        if self.drop_last:
            return self.n_samples // self.batch_size
        return -(-self.n_samples // self.batch_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n_samples)
        else:
            order = np.arange(self.n_samples)
        for k in range(self.start_batch, len(self)):
            batch = order[k * self.batch_size : (k + 1) * self.batch_size]
            yield np.array_split(batch, self.world_size)[self.rank]


class StoreBatches(torch.utils.data.Dataset):
    """Map a batch of sample positions to tensors (use with ``batch_size=None``).

    Each item is a dict with ``images`` (uint8, (B, S, S, 3)), ``subject``
    (int64, (B,)), ``target`` (float32, (B, n_group), zero where masked) and
    ``mask`` (bool, (B, n_group)).

    Parameters
    ----------
    store : Store
    index : SampleIndex
    space : GroupSpace, optional
        The model's group space, when it is not the store's (``adapt``: the
        group model's space plus the new subject): targets and subject indices
        are the model's.
    exclude : ndarray of int64, optional
        Group vertices the loss leaves out (masked).
    """

    def __init__(
        self,
        store: Store,
        index: SampleIndex,
        space: GroupSpace | None = None,
        exclude: np.ndarray | None = None,
    ) -> None:
        self.store, self.index = store, index
        self.space = space if space is not None else store.space
        self.columns = [torch.from_numpy(self.space.subject_columns(n)) for n in store.names]
        if exclude is not None and exclude.size:  # vertices the loss leaves out
            self.columns = [c[~torch.from_numpy(np.isin(c.numpy(), exclude))] for c in self.columns]
        self.n_vertices = np.array([c.numel() for c in self.columns], dtype=np.int64)
        # a sample's subject index in the model (the store's order unless the space is another)
        self._model_subject = np.array(
            [self.space.subject_index(n) for n in store.names], dtype=np.int64
        )

    def __len__(self) -> int:
        return len(self.index)

    def targets(self, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Group-space targets and masks of samples, each (B, n_group)."""
        n_group = self.space.n_vertices
        target = torch.zeros(len(positions), n_group)
        mask = torch.zeros(len(positions), n_group, dtype=torch.bool)
        subjects = self.index.subject[positions]
        for s in np.unique(subjects):
            which = np.flatnonzero(subjects == s)
            rows = self.index.row[positions[which]]
            data = self.store.read_fmri(self.store.names[s], rows)
            if self.columns[s].numel() != data.shape[1]:  # some vertices left out
                keep = np.isin(self.space.subject_columns(self.store.names[s]), self.columns[s])
                data = data[:, keep]
            sel = torch.from_numpy(which)
            target[sel.unsqueeze(1), self.columns[s].unsqueeze(0)] = torch.from_numpy(data)
            mask[sel.unsqueeze(1), self.columns[s].unsqueeze(0)] = True
        return target, mask

    def subjects(self, positions: np.ndarray) -> torch.Tensor:
        """The model's subject index of each sample, (B,)."""
        return torch.from_numpy(self._model_subject[self.index.subject[positions]])

    def images(self, positions: np.ndarray) -> torch.Tensor:
        """uint8 images (B, S, S, 3)."""
        return torch.from_numpy(self.store.read_images(self.index.image[positions]))

    def __getitem__(self, positions: np.ndarray) -> dict[str, torch.Tensor]:
        positions = np.asarray(positions)
        target, mask = self.targets(positions)
        return {
            "images": self.images(positions),
            "subject": self.subjects(positions),
            "target": target,
            "mask": mask,
            "positions": torch.from_numpy(positions),
        }


class ArrayBatches:
    """The :class:`StoreBatches` interface over arrays in memory (benchmarks, tests).

    Parameters
    ----------
    images : ndarray of uint8, shape (n, S, S, 3)
    subject : ndarray of int64, shape (n,)
    target : ndarray of float32, shape (n, n_group)
    mask : ndarray of bool, shape (n, n_group)
        True where the sample's subject has the vertex; all samples of one
        subject must share one mask row.
    """

    def __init__(
        self, images: np.ndarray, subject: np.ndarray, target: np.ndarray, mask: np.ndarray
    ) -> None:
        n = len(subject)
        if not (len(images) == n == len(target) == len(mask)):
            raise ValueError("images, subject, target and mask must have the same length")
        rows = np.arange(n, dtype=np.int64)
        self.index = SampleIndex(np.asarray(subject, dtype=np.int64), rows, rows)
        self._images = torch.from_numpy(np.ascontiguousarray(images))
        self._target = torch.from_numpy(np.asarray(target, dtype=np.float32))
        self._mask = torch.from_numpy(np.asarray(mask, dtype=bool))
        n_subjects = int(self.index.subject.max()) + 1 if n else 0
        self.n_vertices = np.zeros(n_subjects, dtype=np.int64)
        for s in range(n_subjects):
            first = np.flatnonzero(self.index.subject == s)
            if first.size:
                self.n_vertices[s] = int(self._mask[first[0]].sum())

    def __len__(self) -> int:
        return len(self.index)

    def targets(self, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets (zero where masked) and masks of samples, each (B, n_group)."""
        sel = torch.from_numpy(np.asarray(positions))
        mask = self._mask[sel]
        return torch.where(mask, self._target[sel], 0.0), mask

    def subjects(self, positions: np.ndarray) -> torch.Tensor:
        """The subject index of each sample, (B,)."""
        return torch.from_numpy(self.index.subject[np.asarray(positions)])

    def images(self, positions: np.ndarray) -> torch.Tensor:
        """uint8 images (B, S, S, 3)."""
        return self._images[torch.from_numpy(np.asarray(positions))]
