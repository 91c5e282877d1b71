"""The readout interface and registry.

A readout maps the trunk's feature maps of a batch, and each sample's subject,
to a prediction at every vertex of the group space. Readouts are registered by
name with a dataclass of their options, as timm registers models::

    @dataclass
    class MyOptions:
        hidden_dim: int = 256

    @register_readout("mine", MyOptions)
    class MyReadout(Readout):
        needs = frozenset({"pca"})              # ReadoutContext fields it is built from
        def __init__(self, feature_shapes, n_vertices, options, pca=None):
            super().__init__(feature_shapes, n_vertices, options)
            ...                                 # the shared parameters
        def make_subject_module(self): ...      # the parameters one subject owns
        def forward(self, features, subject): ...

and built with ``create_readout("mine", feature_shapes, subjects, n_vertices,
context=ReadoutContext(pca=pca), hidden_dim=128)``: the class builds the shared
part, then every subject is added with :meth:`Readout.add_subject` (as ``adapt``
adds one later) into ``self.per_subject``, a ``ModuleDict`` keyed by subject
name. Every other hook has a default here (``initialize``, ``no_weight_decay``,
``regularizer``, the adaptation hooks). Plugin modules register readouts the
same way (:func:`brainencoder.util.plugins.load_plugins`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from ...util.errors import ConfigError
from ...util.registry import Registry
from ...util.typecheck import from_mapping
from .context import ReadoutContext, check_needs
from .personal import drop_subject_module, make_personal_module

__all__ = [
    "READOUTS",
    "Readout",
    "create_readout",
    "list_readouts",
    "readout_class",
    "register_readout",
    "validate_readout_config",
]

_SUBJECT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
#: every registered readout class, by name
READOUTS: Registry[type[Readout]] = Registry("readout")


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
    n_vertices : int
        Vertices of the group space.
    options : dataclass
        The readout's options (its registered options class).

    Notes
    -----
    The constructor builds the shared part; subjects are added afterwards with
    :meth:`add_subject` (:func:`create_readout` adds the initial ones) and
    listed in :attr:`subjects`, which a sample's subject index points into.
    A subclass takes the data-derived inputs it names in :attr:`needs` (fields
    of :class:`~brainencoder.models.readouts.context.ReadoutContext`) as
    keyword arguments. An optional stage that is off is ``None``.
    """

    name: ClassVar[str] = ""
    options_class: ClassVar[type] = object
    #: the ReadoutContext fields passed to the constructor as keyword arguments
    needs: ClassVar[frozenset[str]] = frozenset()
    #: per-vertex tensors and their vertex axis (grown by :meth:`extend_vertices`): those
    #: the readout has (a property where optional stages may be off, ``None``)
    vertex_axes: ClassVar[dict[str, int]] = {}
    #: whether adapting a subject trains its added vertices by gradient (else
    #: :meth:`finish_adaptation` fits them and the training loss leaves them out)
    trains_added_vertices: ClassVar[bool] = True

    def __init__(
        self, feature_shapes: Sequence[Sequence[int]], n_vertices: int, options: Any
    ) -> None:
        super().__init__()
        self.feature_shapes = [tuple(int(d) for d in s) for s in feature_shapes]
        self.subjects: list[str] = []
        self.n_vertices = int(n_vertices)
        self.options = options
        self.per_subject = nn.ModuleDict()

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
        module = make_personal_module(self, name)  # personal: a model file's adapted subject
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
        drop_subject_module(self, name)  # and its record as a personal subject
        self.subjects.remove(name)

    def subject_parameters(self, name: str) -> list[nn.Parameter]:
        """The parameters that belong to subject ``name`` alone."""
        return list(self.per_subject[name].parameters())

    def subject_modules(self) -> list[nn.Module]:
        """Per-subject modules in subject-index order."""
        return [self.per_subject[s] for s in self.subjects]

    # ------------------------------------------------------------------ vertices
    def extend_vertices(self, old_to_new: torch.Tensor, added: torch.Tensor) -> None:
        """Grow the vertex space by the vertices at ``added`` (a new subject's own).

        Every tensor named in :attr:`vertex_axes` (of the readout and of each
        subject's module) is re-indexed: old vertices move to ``old_to_new``, and
        the new ones start at the mean over the old vertices (a new vertex
        starts as the average vertex), or at :meth:`new_vertex_value`.

        Parameters
        ----------
        old_to_new : LongTensor of shape (n_vertices,)
            New index of every current vertex.
        added : LongTensor of shape (n_added,)
            New indices of the added vertices.
        """
        n_new = self.n_vertices + int(added.numel())
        for module in [self, *self.per_subject.values()]:
            for name, axis in getattr(module, "vertex_axes", {}).items():
                old = getattr(module, name)
                fill = module.new_vertex_value(name, old) if module is self else None
                if fill is None:
                    fill = old.float().mean(axis, keepdim=True).to(old.dtype)
                shape = list(old.shape)
                shape[axis] = n_new
                grown = fill.expand(*shape[:axis], added.numel(), *shape[axis + 1 :])
                new = old.new_empty(shape)
                new.index_copy_(axis, added.to(old.device), grown.contiguous())
                new.index_copy_(axis, old_to_new.to(old.device), old.detach())
                if isinstance(old, nn.Parameter):
                    setattr(module, name, nn.Parameter(new, requires_grad=old.requires_grad))
                else:
                    setattr(module, name, new)
        self.n_vertices = n_new

    def new_vertex_value(self, name: str, old: torch.Tensor) -> torch.Tensor | None:
        """Starting value of the added vertices in tensor ``name`` (default: the mean)."""
        return None

    def adapt_parameters(
        self, subject: str, added: torch.Tensor
    ) -> list[tuple[nn.Parameter, int | None]]:
        """What trains when a new ``subject`` is adapted; everything else stays frozen.

        Parameters
        ----------
        subject : str
        added : LongTensor of shape (n_added,)
            The vertices no other subject has (see :meth:`extend_vertices`).

        Returns
        -------
        list of (Parameter, axis or None)
            ``None``: the whole parameter trains (the subject's own). An axis: a
            shared per-vertex parameter of which only the rows at ``added``
            along that axis train (gradients elsewhere are masked), so every
            other subject's predictions stay bit-identical.
        """
        params: list[tuple[nn.Parameter, int | None]] = [
            (p, None) for p in self.subject_parameters(subject)
        ]
        if added.numel():
            for name, axis in self.vertex_axes.items():
                value = getattr(self, name)
                if isinstance(value, nn.Parameter) and value.is_floating_point():
                    params.append((value, axis))
        return params

    def finish_adaptation(
        self,
        subject: str,
        features: Sequence[torch.Tensor],
        target: torch.Tensor,
        columns: torch.Tensor,
        alphas: Sequence[float],
    ) -> int:
        """After a new subject's training, fit what gradients did not (default: nothing).

        Parameters
        ----------
        subject : str
        features : sequence of Tensor of shape (N, C_l, *positions_l)
            The subject's training images' features.
        target : Tensor of shape (N, n_columns)
            Its responses at ``columns``.
        columns : LongTensor of shape (n_columns,)
            The added vertices of the subject, as group indices.
        alphas : sequence of float
            Candidate ridge penalties, for readouts that fit by ridge.

        Returns
        -------
        int
            Vertices fitted here.
        """
        return 0

    # ------------------------------------------------------------------ hooks
    def initialize(self, mean_response: torch.Tensor) -> None:
        """Start from the data (default: nothing); called once when training builds it new.

        Parameters
        ----------
        mean_response : Tensor of shape (n_vertices,)
            Every vertex's mean training response (the group PCA's mean for
            readouts that need the PCA).
        """

    def no_weight_decay(self) -> set[str]:
        """Names of parameters (relative to the readout) never decayed (default: none).

        timm's convention: a module inside (a subject's) may list its own too.
        """
        return set()

    def regularizer(self) -> torch.Tensor:
        """A penalty added to the training loss (default: none)."""
        ref = next(self.parameters(), None)
        return torch.zeros(()) if ref is None else ref.new_zeros(())

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
    """Class decorator registering a readout under ``name`` with its options dataclass.

    Parameters
    ----------
    name : str
        The name configs use (``model.readout.name``).
    options_class : dataclass type
        The readout's options; ``validate()`` on it, if defined, checks values.

    Raises
    ------
    ConfigError
        If ``name`` is taken, or the class's ``needs`` names no context field.
    """
    if not dataclasses.is_dataclass(options_class):
        raise TypeError("options_class must be a dataclass")

    def wrap(cls: type[Readout]) -> type[Readout]:
        check_needs(name, cls.needs)
        READOUTS.register(name, cls)
        cls.name = name
        cls.options_class = options_class
        return cls

    return wrap


def list_readouts() -> list[str]:
    """Names of the registered readouts."""
    return READOUTS.names()


def readout_class(name: str) -> type[Readout]:
    """The class registered as ``name``; ConfigError listing the valid names otherwise."""
    return READOUTS.get(name)


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
    context: ReadoutContext | None = None,
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
        The initial subjects, added in this order once the readout is
        constructed (a sample's subject index points into this list).
    n_vertices : int
    context : ReadoutContext, optional
        Data-derived inputs (group PCA, vertex regions); the readout gets the
        fields it names in ``needs`` as keyword arguments (None where the
        context lacks them). Default: an empty context.
    **options
        The readout's options; unknown names and ill-typed values are errors
        listing the valid ones.

    Returns
    -------
    Readout
        Predicting (B, n_vertices) from features of shapes (B, *feature_shapes[l]).
    """
    opts = validate_readout_config({"name": name, **options})
    cls = readout_class(name)
    names = [check_subject_name(s) for s in subjects]
    if len(set(names)) != len(names):
        raise ConfigError(f"duplicate subject names in {names}")
    context = ReadoutContext() if context is None else context
    readout = cls(feature_shapes, n_vertices, opts, **context.arguments(cls.needs))
    for subject in names:
        readout.add_subject(subject)
    return readout
