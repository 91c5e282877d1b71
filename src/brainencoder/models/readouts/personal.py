"""A new subject's own copy of the per-vertex tuning, as a residual on the group's.

``adapt`` personalizes a subject of a readout with per-vertex tuning tensors
(``point``: positions, widths, layer selector, feature weights; ``roi_query``:
every vertex's map of its region's outputs): the subject's module
(:class:`PersonalAffine`) holds, beside its gain and offset, a residual of
each of those tensors, zero at the start (the group's tuning). The subject's
samples are predicted with ``group + residual`` in place of the group tensors
(:func:`personal_forward`, through :func:`torch.func.functional_call`); every
other subject's samples take the readout's plain path, so their predictions
are bit-identical. A readout offers this by naming its tuning tensors in a
class attribute ``personal_tensors`` and having a ``personal_subjects`` option
(which subjects are personal: a model file rebuilds them); a method
``personal_step(name)`` may say in what units a residual is stored (the
tensor gets ``residual * personal_step(name)``; an optimizer step moves the
residual by about the learning rate).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.func import functional_call

from .subject_layers import SubjectAffine

__all__ = [
    "PersonalAffine",
    "drop_subject_module",
    "make_personal_module",
    "personal_forward",
    "personalize",
]


class PersonalAffine(SubjectAffine):
    """A subject's gain, offset and residuals of the readout's per-vertex tuning tensors.

    Parameters
    ----------
    n_vertices : int
    tuned : dict of str to (tuple of int, int)
        Shape and vertex axis of every tuning tensor of the readout that the
        subject personalizes; its residual ``personal_<name>`` starts at zero.
    """

    def __init__(self, n_vertices: int, tuned: dict[str, tuple[tuple[int, ...], int]]) -> None:
        super().__init__(n_vertices)
        self.tuned = list(tuned)
        self.vertex_axes = {**SubjectAffine.vertex_axes}  # per instance: the residuals grow too
        for name, (shape, axis) in tuned.items():
            self.register_parameter(f"personal_{name}", nn.Parameter(torch.zeros(shape)))
            self.vertex_axes[f"personal_{name}"] = axis

    def residual(self, name: str) -> torch.Tensor:
        """The subject's residual of the readout's tensor ``name`` (same shape)."""
        return getattr(self, f"personal_{name}")

    def residuals(self) -> list[nn.Parameter]:
        """Every residual (what the L2 pull of ``adapt`` acts on)."""
        return [getattr(self, f"personal_{name}") for name in self.tuned]


def _tuned(readout: nn.Module) -> dict[str, tuple[tuple[int, ...], int]]:
    """Shape and vertex axis of each tuning tensor ``readout`` lets a subject personalize."""
    axes = readout.vertex_axes
    out = {}
    for name in getattr(readout, "personal_tensors", ()):
        value = getattr(readout, name, None)
        if isinstance(value, nn.Parameter) and value.is_floating_point():
            out[name] = (tuple(value.shape), axes[name])
    return out


def make_personal_module(readout: nn.Module, name: str) -> nn.Module:
    """The module of subject ``name``: personal where the readout's options say so."""
    if name in getattr(readout.options, "personal_subjects", ()):
        return PersonalAffine(readout.n_vertices, _tuned(readout))
    return readout.make_subject_module()


def drop_subject_module(readout: nn.Module, name: str) -> None:
    """Delete subject ``name``'s module, and its record as a personal subject if any."""
    del readout.per_subject[name]
    personal = getattr(readout.options, "personal_subjects", None)
    if personal and name in personal:
        personal.remove(name)


def personalize(readout: nn.Module, subject: str) -> PersonalAffine:
    """Give ``subject`` (already added) residuals of the tuning, starting at zero.

    Its gain and offset are kept; the readout's options record the subject so
    that a model file rebuilds the same modules.
    """
    old = readout.per_subject[subject]
    module = PersonalAffine(readout.n_vertices, _tuned(readout)).to(old.gain.device)
    with torch.no_grad():
        module.gain.copy_(old.gain)
        module.offset.copy_(old.offset)
    readout.per_subject[subject] = module
    if subject not in readout.options.personal_subjects:
        readout.options.personal_subjects.append(subject)
    return module


@contextlib.contextmanager
def _plain(readout: nn.Module) -> Iterator[None]:
    """Inside: the readout's forward takes its plain path (no personal subject)."""
    readout._plain_forward = True
    try:
        yield
    finally:
        readout._plain_forward = False


def personal_forward(
    readout: nn.Module, features: Sequence[torch.Tensor], subject: torch.Tensor
) -> torch.Tensor | None:
    """The prediction when a personal subject is in the batch; None otherwise.

    Parameters
    ----------
    readout : Readout
        Whose forward calls this first and returns its result when not None.
    features : sequence of Tensor of shape (B, C_l, *positions_l)
    subject : LongTensor of shape (B,)

    Returns
    -------
    Tensor of shape (B, n_vertices) or None
        The other subjects' rows from the plain forward of the whole batch (as
        without personal subjects: bit-identical), a personal subject's rows
        from the forward with ``group + residual`` tuning tensors.
    """
    if getattr(readout, "_plain_forward", False) or not readout.options.personal_subjects:
        return None
    modules = readout.subject_modules()
    step = getattr(readout, "personal_step", lambda name: 1.0)
    present = [i for i in torch.unique(subject).tolist() if isinstance(modules[i], PersonalAffine)]
    if not present:
        return None
    with _plain(readout):
        only = len(present) == 1 and bool((subject == present[0]).all())
        out = None if only else readout(features, subject)
        for index in present:
            module = modules[index]
            rows = (subject == index).nonzero().squeeze(1)
            tensors = {n: getattr(readout, n) + module.residual(n) * step(n) for n in module.tuned}
            args = ([f.index_select(0, rows) for f in features], subject.index_select(0, rows))
            y = functional_call(readout, tensors, args)
            out = y if only else out.index_copy(0, rows, y)
    return out
