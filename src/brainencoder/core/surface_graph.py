"""Which group vertices are neighbours on the cortical surface (fsaverage mesh edges).

The group space's vertices are fsaverage indices (:mod:`.space`). Two group
vertices are neighbours when an edge of the fsaverage mesh joins them; the
edges come from nilearn's fsaverage meshes: ``fsaverage5``, which nilearn
ships (used whenever every group vertex is one of its 10,242, as in the
synthetic datasets), or the mesh of the masks' own icosahedral order
(``fsaverage`` for the challenge's 163,842 vertices per hemisphere), which
nilearn fetches once into its data folder.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..util.errors import DataError
from .space import HEMIS, GroupSpace, ico_vertices

__all__ = ["mesh_for", "surface_edges"]

_PARTS = {"lh": "left", "rh": "right"}
_BUNDLED = 5  # the icosahedral order of the mesh nilearn ships (fsaverage5)
_ORDERS = range(3, 8)  # fsaverage3 ... fsaverage (order 7), the meshes nilearn knows


def mesh_for(space: GroupSpace) -> str:
    """The nilearn fsaverage mesh whose edges join ``space``'s vertices.

    Raises
    ------
    DataError
        When the masks' length is not that of an icosahedral fsaverage mesh
        (orders 3 to 7): the vertices are then no fsaverage vertices.
    """
    sizes = set(space.n_fsaverage.values())
    orders = [k for k in _ORDERS if {ico_vertices(k)} == sizes]
    if not orders:
        known = ", ".join(f"{ico_vertices(k):,}" for k in _ORDERS)
        raise DataError(
            f"the group space's masks have {sorted(sizes)} entries per hemisphere, not an "
            f"fsaverage mesh's ({known}): its vertices have no surface neighbours; "
            "set smoothness: 0"
        )
    order = orders[0]
    top = max((int(v.max()) for v in space.vertices.values() if v.size), default=-1)
    if order >= _BUNDLED and top < ico_vertices(_BUNDLED):
        order = _BUNDLED  # finer meshes start with fsaverage5's vertices: use the one shipped
    return "fsaverage" if order == 7 else f"fsaverage{order}"


def _load_faces(mesh: str) -> dict[str, np.ndarray]:
    """The sphere's triangles per hemisphere, (n_faces, 3) of vertex indices."""
    from nilearn.datasets import load_fsaverage

    try:
        sphere = load_fsaverage(mesh)["sphere"]
    except Exception as exc:  # a download that failed, a corrupt nilearn data folder
        raise DataError(
            f"cannot load nilearn's {mesh} mesh ({type(exc).__name__}: {exc}); it is fetched "
            "once into nilearn's data folder (NILEARN_DATA): run once with network access, "
            "or set smoothness: 0"
        ) from None
    return {h: np.asarray(sphere.parts[p].faces, dtype=np.int64) for h, p in _PARTS.items()}


def surface_edges(
    space: GroupSpace,
    load_faces: Callable[[str], dict[str, np.ndarray]] = _load_faces,
) -> np.ndarray:
    """Every pair of group vertices that a mesh edge joins, within each hemisphere.

    Parameters
    ----------
    space : GroupSpace
    load_faces : callable, optional
        ``mesh name -> {"lh": faces, "rh": faces}``; nilearn's by default.

    Returns
    -------
    ndarray of int64, shape (n_edges, 2)
        Group indices ``(i, j)`` with ``i < j``, each edge once, sorted.
    """
    faces = load_faces(mesh_for(space))
    out = []
    for hemi in HEMIS:
        verts = space.vertices[hemi]
        tri = faces[hemi]
        group = np.full(int(max(tri.max(), verts.max(initial=-1))) + 1, -1, dtype=np.int64)
        group[verts] = np.arange(verts.size) + space.hemi_slice(hemi).start
        pairs = group[np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]])]
        pairs = pairs[(pairs >= 0).all(axis=1)]
        out.append(np.unique(np.sort(pairs, axis=1), axis=0))
    return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.int64)
