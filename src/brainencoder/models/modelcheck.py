"""A model file checked before anything is built: header, group space, the model it describes.

A model file may come from anyone, and its header alone decides what is
built. :func:`parse_header` types and bounds every header value;
:func:`read_space` checks the group space's arrays, first their names, dtypes
and shapes, then their values; :func:`check_buildable` builds the model the
header describes on torch's ``meta`` device (no memory), counting what its
construction registers, and compares its state with the file's tensors. Only
then does :func:`~brainencoder.models.modelfile.load_encoder` build the model
for real, so a small file that describes a huge model is refused at once with
one line, having allocated nothing of that size. The header and the tensors'
shapes come from :func:`~brainencoder.models.modelfile.open_model_file`,
which reads no tensor.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from ..core.space import HEMIS, GroupSpace
from ..util.errors import BrainEncoderError, CheckpointError, ConfigError
from ..util.typecheck import MAX_IMAGE_SIZE, from_mapping
from .encoder import Encoder, EncoderConfig
from .lora import LoRAConfig, apply_lora
from .multi_trunk import MAX_TRUNKS, header_entries
from .readouts import READOUTS
from .readouts.base import check_subject_name
from .trunk import TRUNK_FAMILIES

if TYPE_CHECKING:
    from .modelfile import ModelFileView

__all__ = [
    "BUILD_ALLOWANCE_BYTES",
    "DAMAGED",
    "MAX_MESH_VERTICES",
    "MAX_SUBJECTS",
    "Header",
    "check_buildable",
    "check_registered",
    "header_json",
    "parse_header",
    "read_space",
    "state_mismatch",
]

#: the most subjects a model file may name
MAX_SUBJECTS = 1024
#: the largest mesh per hemisphere of a group space (fsaverage has 163,842 vertices)
MAX_MESH_VERTICES = 1 << 20
#: building a file's model may register this much more than 8 times its tensors' bytes
#: (layers built, then pruned; buffers that are not stored)
BUILD_ALLOWANCE_BYTES = 256 << 20
#: what every message about a damaged model file ends with
DAMAGED = "the file is damaged or was edited: copy or save the model file again"
_MAX_NESTING = 32  # lists and mappings in a header's JSON (a Hugging Face config nests 3)
_FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})


def header_json(path: Path, meta: dict[str, str], key: str) -> Any:
    """Header value ``key`` parsed as JSON, nested at most ``_MAX_NESTING`` deep."""
    if key not in meta:
        raise CheckpointError(f"{path}: damaged model header (no {key!r}); {DAMAGED}")
    try:
        value = json.loads(meta[key])
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(
            f"{path}: damaged model header ({key!r} is not JSON: {str(exc)[:100]}); {DAMAGED}"
        ) from None
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, dict | list):
            continue
        if depth > _MAX_NESTING:
            raise CheckpointError(
                f"{path}: damaged model header ({key!r} nests deeper than {_MAX_NESTING} "
                f"levels); {DAMAGED}"
            )
        stack.extend((c, depth + 1) for c in (item.values() if isinstance(item, dict) else item))
    return value


def check_registered(path: str | Path, config: Any) -> None:
    """Refuse a model whose readout or trunk family is not registered, naming ``--plugin``.

    The module that registers it is never looked up from the file (a model
    file may come from anyone): the user names it.
    """
    if not isinstance(config, dict):
        return
    readout = config.get("readout")
    missing = []
    if isinstance(readout, dict) and isinstance(readout.get("name"), str):
        if readout["name"] not in READOUTS:
            missing.append(f"readout {readout['name'][:60]!r} (registered: {READOUTS.names()})")
    entries = config.get("trunks")
    entries = entries[: MAX_TRUNKS + 1] if isinstance(entries, list) else []  # more: refused later
    families = [config.get("trunk_family", "timm")]
    families += [e.get("trunk_family", "timm") for e in entries if isinstance(e, dict)]
    for family in dict.fromkeys(f for f in families if isinstance(f, str)):
        if family not in TRUNK_FAMILIES:
            missing.append(f"trunk family {family[:60]!r} (registered: {TRUNK_FAMILIES.names()})")
    if missing:
        raise CheckpointError(
            f"{path}: the model's {' and '.join(missing)} "
            f"{'are' if len(missing) > 1 else 'is'} not registered here; if a plugin module "
            "of yours registers it, pass --plugin MODULE"
        )


class Header(NamedTuple):
    """A model file's header values, typed and bounded (see :func:`parse_header`)."""

    config: EncoderConfig
    subjects: list[str]
    lora: LoRAConfig | None
    store_image_size: int | None


def parse_header(view: ModelFileView) -> Header:
    """Every value of the header, typed and bounded (no tensor is read).

    The config goes through :class:`EncoderConfig`'s own checks (so a config
    file and a header share every rule); subjects are 1 to
    :data:`MAX_SUBJECTS` unique subject names.

    Raises
    ------
    CheckpointError
        Naming the file and the value.
    """
    path, meta = view.path, view.meta
    raw = header_json(path, meta, "config")
    check_registered(path, raw)
    try:
        config = from_mapping(EncoderConfig, raw, prefix="model.")
    except ConfigError as exc:
        raise CheckpointError(f"{path}: unusable model config ({exc})") from None
    config.pretrained, config.trunk_weights = False, None  # the weights are in the file
    config.trunk_kwargs.pop("checkpoint_path", None)  # likewise (files of older versions)
    config.trunk_kwargs["from_header"] = True  # the trunk from these values alone, no folder
    config.trunks = header_entries(config.trunks)  # likewise for every trunk of model.trunks
    subjects = header_json(path, meta, "subjects")
    if not isinstance(subjects, list) or not 1 <= len(subjects) <= MAX_SUBJECTS:
        raise CheckpointError(
            f"{path}: damaged model header ('subjects' must be a list of 1 to {MAX_SUBJECTS} "
            f"subject names; got {str(subjects)[:60]}); {DAMAGED}"
        )
    try:
        for name in subjects:
            check_subject_name(name)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: damaged model header ({exc}); {DAMAGED}") from None
    if len(set(subjects)) != len(subjects):
        raise CheckpointError(f"{path}: damaged model header (a subject named twice); {DAMAGED}")
    lora = None
    if "lora" in meta:  # a training checkpoint with unmerged LoRA factors
        try:
            lora = from_mapping(LoRAConfig, header_json(path, meta, "lora"), prefix="lora.")
        except ConfigError as exc:
            raise CheckpointError(f"{path}: damaged LoRA header ({exc})") from None
    size = meta.get("store_image_size")
    if size is not None and not (
        size.isascii() and size.isdigit() and len(size) <= 4 and 16 <= int(size) <= MAX_IMAGE_SIZE
    ):
        raise CheckpointError(
            f"{path}: damaged model header ('store_image_size' must be an image side in "
            f"[16, {MAX_IMAGE_SIZE}]; got {size[:20]!r}); {DAMAGED}"
        )
    return Header(config, subjects, lora, None if size is None else int(size))


def state_mismatch(
    own: dict[str, tuple[int, ...]],
    stored: dict[str, tuple[int, ...]],
    kinds: Iterable[str] = (),
) -> str | None:
    """What differs between a model's state and a file's (names -> shapes); None if nothing.

    Parameters
    ----------
    own, stored : dict of str to tuple of int
    kinds : iterable of str
        Names whose values are integers on one side, floating point on the other.
    """
    missing, extra, kinds = (
        sorted(set(own) - set(stored)),
        sorted(set(stored) - set(own)),
        sorted(kinds),
    )
    shapes = sorted(
        f"{k}: file {tuple(stored[k])} vs model {tuple(own[k])}"
        for k in own.keys() & stored.keys()
        if tuple(own[k]) != tuple(stored[k])
    )
    parts = [
        f"missing {missing[:5]}" if missing else "",
        f"unexpected {extra[:5]}" if extra else "",
        f"shape mismatch {shapes[:5]}" if shapes else "",
        f"integer vs floating-point values {kinds[:5]}" if kinds else "",
    ]
    return "; ".join(filter(None, parts)) or None


def _increasing(values: np.ndarray, low: int, high: int) -> bool:
    """Whether ``values`` increase strictly within [low, high)."""
    if not values.size:
        return True
    return bool(values[0] >= low and values[-1] < high and np.all(np.diff(values) > 0))


def read_space(view: ModelFileView, subjects: list[str]) -> GroupSpace:
    """The group space of a model file, checked: names, dtypes and shapes, then values.

    Every subject has its columns and nothing else is there; each array is
    int64 of one dimension; each hemisphere's mesh has at most
    :data:`MAX_MESH_VERTICES` vertices, its group vertices are increasing
    indices into it, and each subject's columns increasing group indices of
    that hemisphere.

    Raises
    ------
    CheckpointError
        ``FILE: damaged group space (...)``, naming what is wrong.
    """
    keys = [f"space.{k}.{h}" for h in HEMIS for k in ("n_fsaverage", "vertices")]
    keys += [f"space.columns.{s}.{h}" for s in subjects for h in HEMIS]
    have = {k: view.shapes[k] for k in view.shapes if k.startswith("space.")}
    detail = state_mismatch({k: have.get(k, ()) for k in keys}, have)
    for k in keys if detail is None else ():
        mesh = k.startswith("space.n_fsaverage")
        if view.dtypes[k] != "I64" or view.shapes[k] != ((1,) if mesh else view.shapes[k][:1]):
            want = "(1,)" if mesh else "(N,)"
            detail = f"{k} is {view.dtypes[k]} of shape {view.shapes[k]}; expected int64 {want}"
            break
    if detail:
        raise CheckpointError(f"{view.path}: damaged group space ({detail}); {DAMAGED}")
    arrays = {k[6:]: v.numpy() for k, v in view.load(keys).items()}
    start = 0
    for h in HEMIS:
        n_mesh, vertices = int(arrays[f"n_fsaverage.{h}"][0]), arrays[f"vertices.{h}"]
        stop = start + vertices.size
        if not 1 <= n_mesh <= MAX_MESH_VERTICES or not _increasing(vertices, 0, n_mesh):
            detail = (
                f"{h} mesh of {n_mesh} vertices (at most {MAX_MESH_VERTICES}), group vertices "
                "must be increasing indices into it"
            )
        elif not all(_increasing(arrays[f"columns.{s}.{h}"], start, stop) for s in subjects):
            detail = (
                f"{h}: a subject's columns are not increasing group indices in [{start}, {stop})"
            )
        if detail:
            raise CheckpointError(f"{view.path}: damaged group space ({detail}); {DAMAGED}")
        start = stop
    return GroupSpace.from_arrays(subjects, arrays)


class _OverBudget(Exception):
    """Raised by a registration hook once a build outgrows its :class:`_BuildBudget`."""


class _BuildBudget:
    """Counts what a model's construction registers in this thread: modules, tensors, bytes.

    Past ``items`` registrations or ``nbytes`` bytes of registered tensors
    every further registration raises :class:`_OverBudget`, so a header that
    describes a huge model (or a trunk of thousands of layers, pruned after
    building) stops being built at once. Registrations in other threads are
    not counted.
    """

    def __init__(self, items: int, nbytes: int) -> None:
        self.limits, self.items, self.nbytes = (items, nbytes), 0, 0
        self._thread = threading.get_ident()
        self._handles: list[Any] = []

    @property
    def exceeded(self) -> bool:
        return self.items > self.limits[0] or self.nbytes > self.limits[1]

    def _count(self, module: Any, name: str, value: Any) -> None:
        if threading.get_ident() != self._thread:
            return
        self.items += 1
        if isinstance(value, torch.Tensor):
            self.nbytes += value.numel() * value.element_size()
        if self.exceeded:
            raise _OverBudget

    def __enter__(self) -> _BuildBudget:
        from torch.nn.modules import module as hooks

        self._handles = [
            hooks.register_module_module_registration_hook(self._count),
            hooks.register_module_parameter_registration_hook(self._count),
            hooks.register_module_buffer_registration_hook(self._count),
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()


def check_buildable(view: ModelFileView, header: Header, space: GroupSpace) -> None:
    """Build the header's model on the ``meta`` device and compare it with the file's tensors.

    Nothing of the model's size is allocated: its parameters and buffers are
    meta tensors, and the construction is stopped once it registers more than
    16 modules and tensors per tensor of the file (plus 4096), or more bytes
    than 8 times the file's tensors plus :data:`BUILD_ALLOWANCE_BYTES`. The
    state's names, shapes and kinds of values (integer or floating point) must
    be the file's.

    Raises
    ------
    CheckpointError
        ``FILE: weights were saved from a different model configuration (...)``,
        or ``FILE: unusable model config (...)`` where the header's model does
        not build (a one-line account of any builder's error).
    """
    path = view.path
    stored = {k[6:]: v for k, v in view.shapes.items() if k.startswith("model.")}
    budget = _BuildBudget(
        16 * len(view.shapes) + 4096, 8 * view.stored_bytes + BUILD_ALLOWANCE_BYTES
    )
    failure = ""  # why the build failed, when it was not stopped by the budget
    try:
        with budget, torch.device("meta"):
            probe = Encoder(copy.deepcopy(header.config), space)
            if header.lora is not None:
                apply_lora(probe.trunk.model, header.lora)
    except _OverBudget:
        pass
    except BrainEncoderError as exc:
        failure = f"{exc})"
    except Exception as exc:  # any builder's failure on a header's values is the header's
        text = (str(exc).strip().splitlines() or [""])[0][:200]
        failure = f"{type(exc).__name__}: {text}); {DAMAGED}"
    if failure and not budget.exceeded:
        raise CheckpointError(f"{path}: unusable model config ({failure}")
    if budget.exceeded:
        items, nbytes = budget.limits
        raise CheckpointError(
            f"{path}: weights were saved from a different model configuration (the header's "
            f"model outgrows the file: building it registers over {items} modules and tensors "
            f"or {nbytes / 2**20:.0f} MiB, for {len(view.shapes)} tensors of "
            f"{view.stored_bytes / 2**20:.1f} MiB in the file)"
        )
    own = probe.state_dict()
    kinds = [
        k
        for k in own.keys() & stored.keys()
        if own[k].is_floating_point() != (view.dtypes[f"model.{k}"] in _FLOAT_DTYPES)
    ]
    detail = state_mismatch({k: tuple(v.shape) for k, v in own.items()}, stored, kinds)
    if detail:
        raise CheckpointError(
            f"{path}: weights were saved from a different model configuration ({detail})"
        )
