"""Region labels of the group space, from the challenge's ROI label files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..util.errors import DataError
from .space import HEMIS

__all__ = ["DEFAULT_ROI_GROUPS", "RegionLabels", "group_regions"]

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
                group_vertices = space.vertices[hemi]
                values = fs[group_vertices]
                target = labels[space.hemi_slice(hemi)]
                for k in np.unique(values[values > 0]):
                    roi = mapping.get(int(k), f"{group}-{k}")
                    if roi not in ids:
                        name = roi if roi not in names else f"{group}:{roi}"
                        names.append(name)
                        ids[roi] = len(names)
                    target[(values == k) & (target == 0)] = ids[roi]
    if not names:
        raise DataError(
            f"{layout.root}: no ROI label files of the groups {list(groups)}; the roi_query "
            "readout needs them (roi_masks/{lh,rh}.<group>_fsaverage_space.npy)"
        )
    return RegionLabels(labels, names)
