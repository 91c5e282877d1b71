"""The readout interface and registry.

A readout maps the trunk's feature maps of a batch, and each sample's subject,
to a prediction at every vertex of the group space. Readouts are registered by
name with a dataclass of their options, as timm registers models::

    @dataclass
    class MyOptions:
        hidden_dim: int = 256

    @register_readout("mine", MyOptions)
    class MyReadout(Readout):
        def __init__(self, feature_shapes, subjects, n_vertices, options, pca=None): ...
        def make_subject_module(self): ...      # the parameters one subject owns
        def forward(self, features, subject): ...

and built with ``create_readout("mine", feature_shapes, subjects, n_vertices,
hidden_dim=128)``. Per-subject parameters live in ``self.per_subject``, a
``ModuleDict`` keyed by subject name, so adding, freezing or dropping one
subject touches one key; everything else is shared.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from ...errors import ConfigError
from ...typecheck import from_mapping

__all__ = [
    "Readout",
    "create_readout",
    "list_readouts",
    "readout_class",
    "register_readout",
    "validate_readout_config",
]

_SUBJECT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_REGISTRY: dict[str, type[Readout]] = {}


def check_subject_name(name: str) -> str:
    """Subject names are identifiers (``subj01``); anything else is refused."""
    if not isinstance(name, str) or not _SUBJECT_NAME.match(name):
        raise ConfigError(
            f"subject name {name!r} is not valid: use letters, digits, '_' or '-', "
            "starting with a letter (e.g. subj09)"
        )
    return name


class Readout(nn.Module):
    """Base class of multi-subject readouts.

    Parameters
    ----------
    feature_shapes : sequence of tuple of int
        Shape of each trunk feature map without the batch dimension:
        (C, H, W) or (C, T).
    subjects : sequence of str
        Subject names; a sample's subject index points into this list.
    n_vertices : int
        Vertices of the group space.
    options : dataclass
        The readout's options (its registered options class).
    """

    name: ClassVar[str] = ""
    options_class: ClassVar[type] = object
    uses_pca: ClassVar[bool] = False
    uses_regions: ClassVar[bool] = False

    def __init__(
        self,
        feature_shapes: Sequence[Sequence[int]],
        subjects: Sequence[str],
        n_vertices: int,
        options: Any,
    ) -> None:
        super().__init__()
        self.feature_shapes = [tuple(int(d) for d in s) for s in feature_shapes]
        self.subjects: list[str] = []
        self.n_vertices = int(n_vertices)
        self.options = options
        self.per_subject = nn.ModuleDict()
        self._initial_subjects = [check_subject_name(s) for s in subjects]
        if len(set(self._initial_subjects)) != len(self._initial_subjects):
            raise ConfigError(f"duplicate subject names in {list(subjects)}")

    def _add_initial_subjects(self) -> None:
        """Create the modules of the constructor's subjects (call at the end of __init__)."""
        for name in self._initial_subjects:
            self.add_subject(name)

    # ------------------------------------------------------------------ subjects
    def make_subject_module(self) -> nn.Module:
        """A freshly initialised module holding one subject's own parameters."""
        raise NotImplementedError

    def add_subject(self, name: str, like: str | Sequence[str] | None = None) -> nn.Module:
        """Add a subject with new parameters.

        Parameters
        ----------
        name : str
        like : str or sequence of str, optional
            Start as a copy of this subject, or as the mean of these subjects'
            parameters (an "average subject", a good prior for few images).
            Default: the readout's own initialisation.
        """
        check_subject_name(name)
        if name in self.per_subject:
            raise ConfigError(f"subject {name!r} is already in this readout")
        module = self.make_subject_module()
        if like is not None:
            sources = [like] if isinstance(like, str) else list(like)
            states = [self.per_subject[s].state_dict() for s in sources]
            module.load_state_dict(
                {k: torch.stack([st[k].float() for st in states]).mean(0) for k in states[0]}
            )
        ref = next(self.parameters(), None)
        if ref is not None:
            module.to(ref.device)
        self.per_subject[name] = module
        self.subjects.append(name)
        return module

    def remove_subject(self, name: str) -> None:
        """Drop a subject and its parameters."""
        if name not in self.per_subject:
            raise ConfigError(f"subject {name!r} is not in this readout ({self.subjects})")
        del self.per_subject[name]
        self.subjects.remove(name)

    def subject_parameters(self, name: str) -> list[nn.Parameter]:
        """The parameters that belong to subject ``name`` alone."""
        return list(self.per_subject[name].parameters())

    def subject_modules(self) -> list[nn.Module]:
        """Per-subject modules in subject-index order."""
        return [self.per_subject[s] for s in self.subjects]

    # ------------------------------------------------------------------ hooks
    def initialize(self, mean_response: torch.Tensor) -> None:
        """Start the prediction at the training mean (shape (n_vertices,))."""

    def regularizer(self) -> torch.Tensor:
        """A penalty added to the training loss (default: none)."""
        ref = next(self.parameters())
        return ref.new_zeros(())

    def config(self) -> dict[str, Any]:
        """Name and options that rebuild this readout (stored in model files)."""
        return {"name": self.name, **dataclasses.asdict(self.options)}

    def check_features(self, features: Sequence[torch.Tensor]) -> None:
        if len(features) != len(self.feature_shapes):
            raise ValueError(
                f"expected {len(self.feature_shapes)} feature maps, got {len(features)}"
            )

    def forward(self, features: Sequence[torch.Tensor], subject: torch.Tensor) -> torch.Tensor:
        """Predict responses.

        Parameters
        ----------
        features : sequence of Tensor of shape (B, C_l, *positions_l)
        subject : LongTensor of shape (B,)
            Index into :attr:`subjects`.

        Returns
        -------
        Tensor of shape (B, n_vertices)
        """
        raise NotImplementedError


def register_readout(name: str, options_class: type) -> Any:
    """Class decorator registering a readout under ``name`` with its options dataclass."""

    def wrap(cls: type[Readout]) -> type[Readout]:
        if name in _REGISTRY:
            raise ValueError(f"readout {name!r} is already registered")
        if not dataclasses.is_dataclass(options_class):
            raise TypeError("options_class must be a dataclass")
        cls.name = name
        cls.options_class = options_class
        _REGISTRY[name] = cls
        return cls

    return wrap


def list_readouts() -> list[str]:
    """Names of the registered readouts."""
    return sorted(_REGISTRY)


def readout_class(name: str) -> type[Readout]:
    """The class registered as ``name``; ConfigError listing the valid names otherwise."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown readout {name!r}; available: {list_readouts()}")
    return _REGISTRY[name]


def validate_readout_config(config: Mapping[str, Any], prefix: str = "model.readout.") -> Any:
    """Check ``{"name": ..., **options}``; returns the options dataclass instance."""
    if not isinstance(config, Mapping) or "name" not in config:
        raise ConfigError(
            f"'{prefix.rstrip('.')}' must be a mapping with a 'name' "
            f"(one of {list_readouts()}); got {config!r}"
        )
    cls = readout_class(config["name"])
    options = {k: v for k, v in config.items() if k != "name"}
    return from_mapping(cls.options_class, options, prefix)


def create_readout(
    name: str,
    feature_shapes: Sequence[Sequence[int]],
    subjects: Sequence[str],
    n_vertices: int,
    pca: Any | None = None,
    regions: Any | None = None,
    **options: Any,
) -> Readout:
    """Build a registered readout.

    Parameters
    ----------
    name : str
        A registered name (:func:`list_readouts`).
    feature_shapes : sequence of tuple of int
        (C, H, W) or (C, T) per trunk layer.
    subjects : sequence of str
    n_vertices : int
    pca : GroupPCA, optional
        Fitted group PCA, for readouts that embed through it (``uses_pca``).
    regions : RegionLabels, optional
        The region of every vertex, for readouts built on regions
        (``uses_regions``; see :func:`brainencoder.regions.group_regions`).
    **options
        The readout's options; unknown names and ill-typed values are errors
        listing the valid ones.
    """
    opts = validate_readout_config({"name": name, **options})
    cls = readout_class(name)
    context: dict[str, Any] = {}
    if cls.uses_pca:
        context["pca"] = pca
    if cls.uses_regions:
        context["regions"] = regions
    return cls(feature_shapes, subjects, n_vertices, opts, **context)
