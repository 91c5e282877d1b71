"""The group surface space: the union of all subjects' vertices.

Per hemisphere, the group space holds every fsaverage vertex that at least one
subject has (the union of the ``all-vertices`` masks), in fsaverage order; the
left hemisphere comes first. A subject's challenge-space columns (its fMRI
columns, i.e. the vertices where its mask is 1, in fsaverage order) map to
group indices through :meth:`GroupSpace.subject_columns`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..util.errors import DataError

__all__ = ["HEMIS", "GroupSpace", "ico_vertices"]

HEMIS = ("lh", "rh")


def ico_vertices(order: int) -> int:
    """Vertices per hemisphere of an icosahedral FreeSurfer mesh: ``10 * 4**order + 2``.

    fsaverage is order 7 (163,842), fsaverage5 order 5 (10,242); the first
    ``ico_vertices(k)`` vertices of a finer mesh are those of order ``k``.
    """
    return 10 * 4**order + 2


@dataclass
class GroupSpace:
    """Union of subject vertex masks, per hemisphere.

    Attributes
    ----------
    subjects : list of str
        Subject names in a fixed order (their index is the model's subject index).
    n_fsaverage : dict of str to int
        Length of the fsaverage-space masks per hemisphere.
    vertices : dict of str to ndarray of int64
        Per hemisphere, sorted fsaverage indices of the group vertices.
    columns : dict of str to dict of str to ndarray of int64
        ``columns[subject][hemi][j]`` is the group index (over both hemispheres)
        of the subject's challenge-space column ``j`` of that hemisphere.
    """

    subjects: list[str]
    n_fsaverage: dict[str, int]
    vertices: dict[str, np.ndarray]
    columns: dict[str, dict[str, np.ndarray]]

    @classmethod
    def from_masks(cls, masks: Mapping[str, Mapping[str, np.ndarray]]) -> GroupSpace:
        """Build the group space from per-subject, per-hemisphere fsaverage masks.

        Parameters
        ----------
        masks : mapping of str to mapping of str to ndarray of shape (n_fsaverage,)
            ``masks[subject][hemi]``, boolean or 0/1.
        """
        if not masks:
            raise DataError("cannot build a group space from zero subjects")
        subjects = list(masks)
        n_fsaverage, vertices, offsets = {}, {}, {}
        offset = 0
        for hemi in HEMIS:
            lengths = {masks[s][hemi].shape[0] for s in subjects}
            if len(lengths) != 1:
                raise DataError(f"{hemi} masks differ in length across subjects: {sorted(lengths)}")
            n_fsaverage[hemi] = lengths.pop()
            union = np.zeros(n_fsaverage[hemi], dtype=bool)
            for s in subjects:
                union |= np.asarray(masks[s][hemi], dtype=bool)
            vertices[hemi] = np.flatnonzero(union).astype(np.int64)
            offsets[hemi] = offset
            offset += vertices[hemi].size
        columns = {}
        for s in subjects:
            columns[s] = {}
            for hemi in HEMIS:
                fs_idx = np.flatnonzero(np.asarray(masks[s][hemi], dtype=bool))
                columns[s][hemi] = np.searchsorted(vertices[hemi], fs_idx) + offsets[hemi]
        return cls(subjects, n_fsaverage, vertices, columns)

    @property
    def n_vertices(self) -> int:
        """Total number of group vertices (both hemispheres)."""
        return sum(v.size for v in self.vertices.values())

    def hemi_slice(self, hemi: str) -> slice:
        """Slice of the group axis that belongs to hemisphere ``hemi``."""
        start = 0 if hemi == HEMIS[0] else self.vertices[HEMIS[0]].size
        return slice(start, start + self.vertices[hemi].size)

    def subject_index(self, subject: str) -> int:
        """Position of ``subject`` in :attr:`subjects`."""
        try:
            return self.subjects.index(subject)
        except ValueError:
            raise DataError(
                f"subject {subject!r} is not in this model's group space "
                f"(subjects: {', '.join(self.subjects)})"
            ) from None

    def n_subject_vertices(self, subject: str, hemi: str) -> int:
        """Number of challenge-space vertices of ``subject`` in ``hemi``."""
        self.subject_index(subject)
        return self.columns[subject][hemi].size

    def subject_columns(self, subject: str) -> np.ndarray:
        """Group indices of the subject's columns, lh then rh, shape (n_lh + n_rh,)."""
        self.subject_index(subject)
        return np.concatenate([self.columns[subject][h] for h in HEMIS])

    def subject_mask(self, subject: str) -> np.ndarray:
        """Boolean mask over the group axis of the subject's vertices, shape (n_group,)."""
        mask = np.zeros(self.n_vertices, dtype=bool)
        mask[self.subject_columns(subject)] = True
        return mask

    def masks(self) -> np.ndarray:
        """Boolean masks of all subjects, shape (n_subjects, n_group)."""
        return np.stack([self.subject_mask(s) for s in self.subjects])

    def split_hemis(self, subject: str, data: np.ndarray) -> dict[str, np.ndarray]:
        """Take a subject's columns out of group-space data.

        Parameters
        ----------
        data : ndarray of shape (..., n_group)

        Returns
        -------
        dict of str to ndarray of shape (..., n_vertices_hemi)
        """
        self.subject_index(subject)
        return {h: data[..., self.columns[subject][h]] for h in HEMIS}

    def split_columns(self, subject: str, values: np.ndarray) -> dict[str, np.ndarray]:
        """Split a subject's challenge-space values (lh columns, then rh) per hemisphere.

        Parameters
        ----------
        subject : str
            One of :attr:`subjects`.
        values : ndarray of shape (..., n_lh + n_rh)
            The subject's columns of both hemispheres side by side, lh first
            (as its fMRI files concatenated, or a per-vertex metric).

        Returns
        -------
        dict of str to ndarray of shape (..., n_vertices_hemi)
            Views of ``values``: ``"lh"`` and ``"rh"``.

        Raises
        ------
        DataError
            When the last axis is not the subject's vertex count.
        """
        n_lh = self.n_subject_vertices(subject, HEMIS[0])
        n = n_lh + self.n_subject_vertices(subject, HEMIS[1])
        values = np.asarray(values)
        if values.shape[-1] != n:
            raise DataError(
                f"{subject}: {values.shape[-1]} columns, expected {n} (its lh and rh vertices)"
            )
        return {HEMIS[0]: values[..., :n_lh], HEMIS[1]: values[..., n_lh:]}

    def to_fsaverage(self, subject: str, hemi: str, values: np.ndarray) -> np.ndarray:
        """A subject's values of one hemisphere on the whole fsaverage mesh (NaN elsewhere).

        Parameters
        ----------
        subject : str
        hemi : {"lh", "rh"}
        values : ndarray of shape (..., n_vertices of the subject in ``hemi``)

        Returns
        -------
        ndarray of float, shape (..., n_fsaverage)
        """
        offset = self.hemi_slice(hemi).start
        index = self.vertices[hemi][self.columns[subject][hemi] - offset]
        values = np.asarray(values)
        if values.shape[-1] != index.size:
            raise DataError(
                f"{subject} {hemi}: {values.shape[-1]} values, expected {index.size} (its vertices)"
            )
        out = np.full((*values.shape[:-1], self.n_fsaverage[hemi]), np.nan)
        out[..., index] = values
        return out

    def fsaverage_masks(self, subject: str) -> dict[str, np.ndarray]:
        """The subject's ``all-vertices`` masks, shape (n_fsaverage,) per hemisphere."""
        self.subject_index(subject)
        out = {}
        for hemi in HEMIS:
            mask = np.zeros(self.n_fsaverage[hemi], dtype=bool)
            local = self.columns[subject][hemi] - self.hemi_slice(hemi).start
            mask[self.vertices[hemi][local]] = True
            out[hemi] = mask
        return out

    def vertex_difference(
        self,
        subject: str,
        hemi: str,
        mask: np.ndarray,
        here: str = "the model",
        there: str = "the data",
    ) -> str | None:
        """What differs between ``subject``'s vertices here and another ``all-vertices`` mask.

        Parameters
        ----------
        subject : str
            One of :attr:`subjects`.
        hemi : {"lh", "rh"}
        mask : ndarray of shape (n_fsaverage,)
            Boolean or 0/1: the subject's mask of that hemisphere in a dataset.
        here, there : str
            How the phrase names this space and the mask's source.

        Returns
        -------
        str or None
            None when ``mask`` selects the same fsaverage vertices; else one phrase,
            such as ``"150 vertices in each, but fsaverage vertices only in the data:
            17; only in the model: 5"`` (at most 5 indices per side).
        """
        mine = self.fsaverage_masks(subject)[hemi]
        theirs = np.asarray(mask, dtype=bool)
        if theirs.shape != mine.shape:
            return f"a mask of shape {theirs.shape} in {there}, ({mine.size},) in {here}"
        if np.array_equal(mine, theirs):
            return None
        only = {there: np.flatnonzero(theirs & ~mine), here: np.flatnonzero(mine & ~theirs)}
        parts = [
            f"only in {name}: {', '.join(map(str, idx[:5]))}"
            + (f", ... ({idx.size} in all)" if idx.size > 5 else "")
            for name, idx in only.items()
            if idx.size
        ]
        listed = "; ".join(parts)
        n_there, n_here = int(theirs.sum()), int(mine.sum())
        if n_here == n_there:
            return f"{n_here} vertices in each, but fsaverage vertices {listed}"
        return f"{n_there} vertices in {there}, {n_here} in {here}; fsaverage vertices {listed}"

    def with_subject(
        self, subject: str, masks: Mapping[str, np.ndarray]
    ) -> tuple[GroupSpace, np.ndarray, np.ndarray]:
        """This space plus one subject (the union of masks grows if it must).

        Parameters
        ----------
        subject : str
            A name not in :attr:`subjects`.
        masks : mapping of str to ndarray of shape (n_fsaverage,)
            The new subject's ``all-vertices`` masks per hemisphere.

        Returns
        -------
        space : GroupSpace
            Subjects in the same order with ``subject`` last.
        old_to_new : ndarray of int64, shape (n_group_old,)
            New group index of every old group vertex.
        added : ndarray of int64, shape (n_added,)
            New group indices of the vertices only the new subject has.
        """
        if subject in self.subjects:
            raise DataError(f"subject {subject!r} is already in this group space")
        all_masks = {s: self.fsaverage_masks(s) for s in self.subjects}
        all_masks[subject] = {h: np.asarray(masks[h], dtype=bool) for h in HEMIS}
        space = GroupSpace.from_masks(all_masks)
        old_to_new, added = [], []
        for hemi in HEMIS:
            start = space.hemi_slice(hemi).start
            new_pos = np.searchsorted(space.vertices[hemi], self.vertices[hemi]) + start
            old_to_new.append(new_pos)
            is_old = np.isin(space.vertices[hemi], self.vertices[hemi])
            added.append(np.flatnonzero(~is_old) + start)
        return space, np.concatenate(old_to_new), np.concatenate(added)

    def without_subject(self, subject: str) -> GroupSpace:
        """This space without ``subject``; its vertices stay (a model's tensors keep their size).

        Parameters
        ----------
        subject : str
            One of :attr:`subjects`.
        """
        self.subject_index(subject)
        return GroupSpace(
            [s for s in self.subjects if s != subject],
            dict(self.n_fsaverage),
            dict(self.vertices),
            {s: c for s, c in self.columns.items() if s != subject},
        )

    def check_subjects_match(self, other: GroupSpace, source: str) -> None:
        """Raise unless every subject of ``other`` is here with the same vertices."""
        for name in other.subjects:
            if name not in self.subjects:
                raise DataError(
                    f"{source}: subject {name!r} is not in the model (subjects "
                    f"{', '.join(self.subjects)})"
                )
            mine, theirs = self.fsaverage_masks(name), other.fsaverage_masks(name)
            if any(not np.array_equal(mine[h], theirs[h]) for h in HEMIS):
                raise DataError(
                    f"{source}: subject {name!r} has other vertices than the model's {name}"
                )

    def same_as(self, other: GroupSpace) -> bool:
        """True when both spaces have the same subjects and the same vertices and columns."""
        if self.subjects != other.subjects:
            return False
        a, b = self.to_arrays(), other.to_arrays()
        return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat dict of int64 arrays (for safetensors / npz); see :meth:`from_arrays`."""
        out = {}
        for hemi in HEMIS:
            out[f"vertices.{hemi}"] = self.vertices[hemi]
            out[f"n_fsaverage.{hemi}"] = np.array([self.n_fsaverage[hemi]], dtype=np.int64)
            for s in self.subjects:
                out[f"columns.{s}.{hemi}"] = self.columns[s][hemi]
        return out

    @classmethod
    def from_arrays(cls, subjects: list[str], arrays: Mapping[str, np.ndarray]) -> GroupSpace:
        """Inverse of :meth:`to_arrays`."""
        try:
            return cls(
                subjects=list(subjects),
                n_fsaverage={h: int(np.asarray(arrays[f"n_fsaverage.{h}"])[0]) for h in HEMIS},
                vertices={h: np.asarray(arrays[f"vertices.{h}"], dtype=np.int64) for h in HEMIS},
                columns={
                    s: {h: np.asarray(arrays[f"columns.{s}.{h}"], dtype=np.int64) for h in HEMIS}
                    for s in subjects
                },
            )
        except KeyError as exc:
            raise DataError(f"group space arrays lack {exc}") from None
