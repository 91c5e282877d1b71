"""What a readout may be built from besides its options: :class:`ReadoutContext`.

Some readouts need data-derived objects to start from: the frozen group PCA
(``grouplin``), the region of every vertex (``roi_query``). A readout class
names the fields it needs in ``needs``; whoever builds a model (training, or
:func:`~brainencoder.models.encoder.create_encoder`) computes only those (a
group PCA is costly to fit) and :func:`~brainencoder.models.readouts.create_readout`
passes each as a keyword argument of the readout's constructor::

    @register_readout("mine", MyOptions)
    class MyReadout(Readout):
        needs = frozenset({"pca"})

        def __init__(self, feature_shapes, n_vertices, options, pca=None): ...

A field is None where nothing provides it: a readout rebuilt from a model file
gets its tensors from the file instead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...util.errors import ConfigError

if TYPE_CHECKING:
    from ...core.regions import RegionLabels
    from ..pca import GroupPCA

__all__ = ["CONTEXT_FIELDS", "ReadoutContext", "check_needs"]


@dataclass(frozen=True)
class ReadoutContext:
    """Data-derived inputs of readout construction.

    Attributes
    ----------
    pca : GroupPCA or None
        The group PCA of the training responses (components of shape
        (n_components, n_vertices)), for readouts that embed through it.
    regions : RegionLabels or None
        The region of every group vertex, labels of shape (n_vertices,)
        (see :func:`brainencoder.core.regions.group_regions`).
    """

    pca: GroupPCA | None = None
    regions: RegionLabels | None = None

    def arguments(self, needs: frozenset[str]) -> dict[str, Any]:
        """The keyword arguments of a readout that needs the fields ``needs``."""
        return {name: getattr(self, name) for name in sorted(needs)}


CONTEXT_FIELDS: frozenset[str] = frozenset(f.name for f in dataclasses.fields(ReadoutContext))


def check_needs(name: str, needs: Any) -> frozenset[str]:
    """Check a readout's ``needs``: a frozenset of :class:`ReadoutContext` fields.

    Raises
    ------
    ConfigError
        Naming the readout and the fields that exist.
    """
    if not isinstance(needs, frozenset) or not needs <= CONTEXT_FIELDS:
        raise ConfigError(
            f"readout {name!r}: 'needs' must be a frozenset of ReadoutContext fields "
            f"{sorted(CONTEXT_FIELDS)}; got {needs!r}"
        )
    return needs
