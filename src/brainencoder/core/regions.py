"""Region labels of the group space, from the challenge's ROI label files."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..util.errors import DataError
from .space import HEMIS

__all__ = [
    "DEFAULT_ROI_GROUPS",
    "RegionLabels",
    "RoiFiles",
    "RoiMask",
    "group_regions",
    "label_masks",
    "roi_mask",
    "subject_roi_masks",
]

# the most specific groups first: a vertex in FFA-1 and in "ventral" is FFA-1's
DEFAULT_ROI_GROUPS = (
    "floc-faces",
    "floc-places",
    "floc-bodies",
    "floc-words",
    "prf-visualrois",
    "streams",
)


@dataclass
class RegionLabels:
    """One region per group vertex.

    Attributes
    ----------
    labels : ndarray of int64, shape (n_vertices,)
        0 for vertices outside every ROI, k for the ROI ``names[k - 1]``.
    names : list of str
    """

    labels: np.ndarray
    names: list[str]


class RoiFiles(Protocol):
    """A subject's ROI label files (what :class:`~brainencoder.data.layout.SubjectLayout` has).

    Attributes
    ----------
    name : str
        The subject, as error messages name it.
    roi_groups : list of str
        The ROI groups with label files.
    """

    name: str
    roi_groups: list[str]

    def load_rois(self, group: str, hemi: str, space: str = "challenge") -> np.ndarray:
        """Integer labels of one group and hemisphere, shape (n_vertices_hemi,)."""
        ...

    def load_mapping(self, group: str) -> dict[int, str]:
        """Label value -> ROI name of one group."""
        ...


@dataclass(frozen=True)
class RoiMask:
    """The vertices of one label value of one ROI group, per hemisphere.

    Attributes
    ----------
    group : str
        The ROI group (``floc-faces``, ``prf-visualrois``, ...).
    label : int
        The label value (never 0, which is "outside every ROI").
    name : str or None
        Its name in the group's mapping; None where the mapping has no entry.
    hemis : dict of str to ndarray of bool, shape (n_vertices_hemi,)
        Per hemisphere of the labels given, the vertices that carry ``label``.
    """

    group: str
    label: int
    name: str | None
    hemis: dict[str, np.ndarray]

    def both(self) -> np.ndarray:
        """The hemispheres' masks side by side (lh first), shape (n_lh + n_rh,)."""
        return np.concatenate([self.hemis[h] for h in HEMIS if h in self.hemis])


def label_masks(
    labels: Mapping[str, np.ndarray], mapping: Mapping[int, str], group: str = ""
) -> list[RoiMask]:
    """One mask per label value, the single place where ROI labels become vertex masks.

    Parameters
    ----------
    labels : mapping of str to ndarray of int, shape (n_vertices_hemi,)
        Per hemisphere (one or both), the group's label of every vertex.
    mapping : mapping of int to str
        Label value -> ROI name (0, "Unknown", is never a region).
    group : str, default=""
        The group's name, recorded in every mask.

    Returns
    -------
    list of RoiMask
        Every nonzero value present in any hemisphere, in increasing order; a
        hemisphere without that value has an all-False mask.
    """
    present = set()
    for values in labels.values():
        present.update(np.unique(values).tolist())
    return [
        RoiMask(group, int(k), mapping.get(int(k)), {h: v == k for h, v in labels.items()})
        for k in sorted(present - {0})
    ]


def subject_roi_masks(subject: RoiFiles) -> list[RoiMask]:
    """Masks of every ROI of a subject's label files, over its challenge columns.

    Parameters
    ----------
    subject : RoiFiles
        A subject of a dataset layout (``layout[name]``).

    Returns
    -------
    list of RoiMask
        Group by group (``subject.roi_groups`` order), label values in
        increasing order (:func:`label_masks`); masks of shape (n_vertices_hemi,).
    """
    masks: list[RoiMask] = []
    for group in subject.roi_groups:
        labels = {h: subject.load_rois(group, h) for h in HEMIS}
        masks += label_masks(labels, subject.load_mapping(group), group)
    return masks


def roi_mask(subject: RoiFiles, name: str) -> np.ndarray:
    """Boolean mask over a subject's challenge columns (lh then rh) of ROI ``name``.

    The first group (in ``subject.roi_groups`` order) whose mapping names
    ``name`` decides; every label value of that name in it counts.

    Parameters
    ----------
    subject : RoiFiles
        A subject of a dataset layout (``layout[name]``).
    name : str
        An ROI name of the challenge's mapping files (``FFA-1``, ``PPA``, ``V1v``...).

    Returns
    -------
    ndarray of bool, shape (n_lh + n_rh,)

    Raises
    ------
    DataError
        For a name no mapping of the subject has (listing the valid names), or
        one whose label has no vertex in this subject.
    """
    valid: set[str] = set()
    for group in subject.roi_groups:
        mapping = subject.load_mapping(group)
        named = {v for k, v in mapping.items() if k != 0}
        valid |= named
        if name in named:
            labels = {h: subject.load_rois(group, h) for h in HEMIS}
            mask = np.zeros(sum(v.size for v in labels.values()), dtype=bool)
            for roi in label_masks(labels, mapping, group):
                if roi.name == name:
                    mask |= roi.both()
            if not mask.any():
                raise DataError(f"{subject.name}: ROI {name!r} has no vertices in this subject")
            return mask
    raise DataError(
        f"{subject.name}: unknown ROI {name!r}; valid names: {', '.join(sorted(valid))}"
    )


def group_regions(layout, space, groups: Sequence[str] = DEFAULT_ROI_GROUPS) -> RegionLabels:
    """Label every group vertex with the first ROI (in ``groups`` order) that holds it.

    A vertex takes the label of the first subject (in the space's order) whose
    fsaverage-space ROI file labels it; groups no subject has are skipped.

    Parameters
    ----------
    layout : DatasetLayout
        The data the space was built from (its ``roi_masks`` folders).
    space : GroupSpace
    groups : sequence of str
        ROI groups in priority order.

    Returns
    -------
    RegionLabels
    """
    labels = np.zeros(space.n_vertices, dtype=np.int64)
    names: list[str] = []
    for group in groups:
        holders = [s for s in space.subjects if s in layout.subjects]
        holders = [s for s in holders if group in layout[s].roi_groups]
        if not holders:
            continue
        ids: dict[str, int] = {}
        for subject in holders:
            subj = layout[subject]
            mapping = subj.load_mapping(group)
            for hemi in HEMIS:
                fs = subj.load_rois(group, hemi, space="fsaverage")
                target = labels[space.hemi_slice(hemi)]
                for mask in label_masks({hemi: fs[space.vertices[hemi]]}, mapping, group):
                    if mask.label < 0:  # only positive labels are regions here
                        continue
                    roi = mask.name if mask.name is not None else f"{group}-{mask.label}"
                    if roi not in ids:
                        name = roi if roi not in names else f"{group}:{roi}"
                        names.append(name)
                        ids[roi] = len(names)
                    target[mask.hemis[hemi] & (target == 0)] = ids[roi]
    if not names:
        raise DataError(
            f"{layout.root}: no ROI label files of the groups {list(groups)}; the roi_query "
            "readout needs them (roi_masks/{lh,rh}.<group>_fsaverage_space.npy)"
        )
    return RegionLabels(labels, names)
