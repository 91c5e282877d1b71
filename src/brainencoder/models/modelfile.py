"""Self-contained model files (safetensors): weights, group space and config.

A model file holds every tensor of the encoder (``model.*``: trunk, readout,
frozen embedding) and the group space (``space.*``); its header holds the
encoder config (trunk, layers, readout name and options) and the subject
names. :func:`load_encoder` rebuilds the encoder from the header alone (no
download, no pickle) and trusts nothing in the file: the header is read
without its tensors (:func:`open_model_file`), every header value is typed
and bounded, the group space is checked, and the model the header describes
is built on torch's ``meta`` device and compared with the file's tensor
names and shapes (:mod:`.modelcheck`), all before anything is allocated; the
weights must then be finite.

Format 1 (brainencoder <= 0.1, one hard-wired head) is read and converted to
the ``grouplin_seq`` readout it was.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from pathlib import Path

import torch

from ..util.errors import CheckpointError, ConfigError
from ..util.fileio import atomic_path
from ..util.version import __version__
from .encoder import Encoder
from .lora import apply_lora
from .modelcheck import (
    DAMAGED,
    check_buildable,
    header_json,
    parse_header,
    read_space,
    state_mismatch,
)

__all__ = [
    "FORMAT_VERSION",
    "MAX_HEADER_BYTES",
    "RECORD_KEY",
    "ModelFileView",
    "encoder_metadata",
    "load_encoder",
    "load_state",
    "loaded_record",
    "model_state",
    "open_model_file",
    "read_metadata",
    "read_model_file",
    "read_model_header",
    "record_metadata",
    "save_encoder",
]

FORMAT_VERSION = 2
#: the largest safetensors header read (tensor names, shapes, metadata); a model's is KiBs
MAX_HEADER_BYTES = 16 << 20
#: the header entry recording what the model trained on (see brainencoder.runs.provenance)
RECORD_KEY = "trained_on"


def record_metadata(record: dict | None) -> dict[str, str]:
    """The header entry of a model's ``training_record`` ({} for None)."""
    return {} if record is None else {RECORD_KEY: json.dumps(record, sort_keys=True)}


def read_metadata(path: str | Path) -> dict[str, str]:
    """A safetensors file's header metadata, bounded and without reading a tensor.

    Raises
    ------
    CheckpointError
        Missing or unreadable file, or a header over :data:`MAX_HEADER_BYTES`.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    _check_header_size(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            return fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def _check_header_size(path: Path) -> int:
    """The header's length in bytes, refused over :data:`MAX_HEADER_BYTES`."""
    if not path.is_file():
        raise CheckpointError(f"{path}: model file not found")
    try:
        with path.open("rb") as fh:
            n_header = int.from_bytes(fh.read(8), "little")
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read this model file ({exc})") from None
    if n_header > MAX_HEADER_BYTES:
        raise CheckpointError(
            f"{path}: a safetensors header of {n_header} bytes, over "
            f"{MAX_HEADER_BYTES >> 20} MiB; not a brainencoder model file"
        )
    return n_header


def loaded_record(meta: dict[str, str], path: str | Path) -> dict | None:
    """The header's training record as JSON (checked by brainencoder.runs.provenance)."""
    if RECORD_KEY not in meta:
        return None
    try:
        return json.loads(meta[RECORD_KEY])
    except ValueError as exc:
        raise CheckpointError(f"{path}: damaged '{RECORD_KEY}' record ({exc})") from None


def encoder_metadata(model: Encoder) -> dict[str, str]:
    """String metadata that, with the weights, rebuilds the model."""
    return {
        "format": "brainencoder-model",
        "format_version": str(FORMAT_VERSION),
        "brainencoder_version": __version__,
        "config": json.dumps(dataclasses.asdict(model.config)),
        "subjects": json.dumps(model.space.subjects),
    }


def save_encoder(
    model: Encoder,
    path: str | Path,
    metadata: dict[str, str] | None = None,
    merge_lora: bool = True,
) -> None:
    """Save a self-contained model file (safetensors): weights, PCA, group space, config.

    Parameters
    ----------
    model : Encoder
    path : path
        Output file, written atomically.
    metadata : dict of str to str, optional
        Extra metadata stored in the file header.
    merge_lora : bool, default=True
        Fold LoRA updates into the trunk's weights (a plain model file). False
        keeps the factors and records the LoRA config (training checkpoints,
        so a resumed run continues the same factors).
    """
    from safetensors.torch import save_file

    from .lora import lora_layers, merged_state_dict

    model = getattr(model, "module", model)
    lora = getattr(model, "lora_config", None) if lora_layers(model.trunk) else None
    state = merged_state_dict(model) if lora is not None and merge_lora else model.state_dict()
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in state.items()}
    tensors.update({f"space.{k}": torch.from_numpy(v) for k, v in model.space.to_arrays().items()})
    meta = encoder_metadata(model)
    meta.update(record_metadata(getattr(model, "training_record", None)))
    if lora is not None and not merge_lora:
        meta["lora"] = json.dumps(dataclasses.asdict(lora))
    meta.update(metadata or {})
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=meta)


@dataclasses.dataclass
class ModelFileView:
    """A model file's header, read without loading a tensor (format 1 converted).

    Attributes
    ----------
    path : Path
    meta : dict of str to str
        The header's metadata (format 1: converted to the current format).
    shapes, dtypes : dict of str to tuple of int, dict of str to str
        Every tensor's shape and safetensors dtype (``"F32"``), by name.
    sources : dict of str to (str, int or None)
        The file's tensor that holds each name, and its row (format 1 stacks
        the subjects' maps), or None for the whole tensor.
    stored_bytes : int
        Bytes of the file's tensors.
    """

    path: Path
    meta: dict[str, str]
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    sources: dict[str, tuple[str, int | None]]
    stored_bytes: int

    def load(self, keys: Iterable[str]) -> dict[str, torch.Tensor]:
        """The tensors ``keys`` (each tensor of the file is read once)."""
        from safetensors import SafetensorError, safe_open

        out: dict[str, torch.Tensor] = {}
        read: dict[str, torch.Tensor] = {}
        try:
            with safe_open(str(self.path), framework="pt") as fh:
                for key in keys:
                    name, row = self.sources[key]
                    if name not in read:
                        read[name] = fh.get_tensor(name)
                    out[key] = read[name] if row is None else read[name][row].clone()
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{self.path}: not a readable safetensors file ({exc})") from None
        return out


def open_model_file(path: str | Path) -> ModelFileView:
    """Header, tensor names, shapes and dtypes of a model file; one-line errors otherwise.

    Raises
    ------
    CheckpointError
        Missing or unreadable file, a header over :data:`MAX_HEADER_BYTES`,
        not a brainencoder model file, another format version.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    n_header = _check_header_size(path)
    size = path.stat().st_size
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            slices = {k: fh.get_slice(k) for k in fh.keys()}
            shapes = {k: tuple(int(d) for d in s.get_shape()) for k, s in slices.items()}
            dtypes = {k: str(s.get_dtype()) for k, s in slices.items()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({exc}); it may be truncated"
        ) from None
    if meta.get("format") != "brainencoder-model":
        raise CheckpointError(f"{path}: not a brainencoder model file")
    version = meta.get("format_version", "")
    sources: dict[str, tuple[str, int | None]] = {k: (k, None) for k in shapes}
    if version == "1":
        meta, sources = _convert_v1(path, meta, shapes)
    elif version != str(FORMAT_VERSION):
        raise CheckpointError(
            f"{path}: model format {version[:20]!r}, this brainencoder reads "
            f"{FORMAT_VERSION} (and 1); upgrade brainencoder"
        )
    # older files hold point's optional stages that are off as zero-size tensors (None
    # since: no parameter); they hold nothing to load and are not read
    for name in ("surround_weight", "output_gain", "shared_out"):
        key = f"model.readout.{name}"
        if key in sources and 0 in shapes[sources[key][0]]:
            del sources[key]
    shapes = {k: shapes[s][0 if i is None else 1 :] for k, (s, i) in sources.items()}
    dtypes = {k: dtypes[s] for k, (s, _) in sources.items()}
    return ModelFileView(path, meta, shapes, dtypes, sources, size - 8 - n_header)


def _convert_v1(
    path: Path, meta: dict[str, str], shapes: dict[str, tuple[int, ...]]
) -> tuple[dict[str, str], dict[str, tuple[str, int | None]]]:
    """Format 1 (one ``head`` of stacked subject maps) -> the ``grouplin_seq`` readout."""
    old, subjects = header_json(path, meta, "config"), header_json(path, meta, "subjects")
    moved = ("hidden_dim", "latent_dim", "dropout")
    if not isinstance(old, dict) or not isinstance(subjects, list) or not set(moved) <= set(old):
        raise CheckpointError(
            f"{path}: damaged format-1 model file (its config needs {list(moved)} and its "
            f"subjects must be a list); {DAMAGED}"
        )
    old["readout"] = {"name": "grouplin_seq", **{k: old.pop(k) for k in moved}}
    sources: dict[str, tuple[str, int | None]] = {}
    for key, shape in shapes.items():
        m = re.fullmatch(r"model\.head\.projections\.(\d+)\.(spatial|channel)", key)
        if m:
            sources[f"model.readout.projections.{m[1]}.proj.{m[2]}"] = (key, None)
        elif key in ("model.head.subject.weight", "model.head.subject.bias"):
            if not shape or shape[0] != len(subjects):
                raise CheckpointError(
                    f"{path}: damaged format-1 model file ({key} has shape {shape}, not one "
                    f"row for each of its {len(subjects)} subjects); {DAMAGED}"
                )
            part = key.rsplit(".", 1)[1]
            for i, name in enumerate(subjects):
                sources[f"model.readout.per_subject.{name}.{part}"] = (key, i)
        elif key.startswith("model.head."):
            sources["model.readout." + key[len("model.head.") :]] = (key, None)
        else:
            sources[key] = (key, None)
    return {**meta, "config": json.dumps(old), "format_version": str(FORMAT_VERSION)}, sources


def read_model_header(path: str | Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Tensor shapes and metadata of a model file, no tensor read (format 1 converted)."""
    view = open_model_file(path)
    return view.shapes, view.meta


def read_model_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a model file (format 1 converted); clear errors otherwise."""
    view = open_model_file(path)
    return view.load(view.shapes), view.meta


def model_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder's state dict out of a model file's tensors."""
    return {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}


def load_state(model: Encoder, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load weights into ``model``, explaining any mismatch of configuration."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    detail = state_mismatch(own, {k: tuple(v.shape) for k, v in state.items()})
    if detail:
        raise CheckpointError(
            f"{source}: weights were saved from a different model configuration ({detail})"
        )
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(
            f"{source}: {len(bad)} weight tensor(s) hold NaN or inf (e.g. {bad[0]}); the run "
            "that wrote it diverged: retrain with a lower lr or use an earlier checkpoint"
        )
    try:
        model.load_state_dict(state)
    except ConfigError as exc:  # a readout's check of the loaded values (roi_query's regions)
        raise CheckpointError(f"{source}: {exc}") from None


def load_encoder(path: str | Path, map_location: str | torch.device = "cpu") -> Encoder:
    """Rebuild an encoder (eval mode) from a :func:`save_encoder` file; no download, no pickle.

    The header, the group space and the model the header describes (built on
    the ``meta`` device) are checked against the file's tensors before the
    model is built (:mod:`.modelcheck`). ``store_image_size`` is set from the
    header (None when the file has none).

    Raises
    ------
    CheckpointError
        One line naming the file and what is wrong with it.
    """
    view = open_model_file(path)
    header = parse_header(view)
    space = read_space(view, header.subjects)
    check_buildable(view, header, space)
    model = Encoder(header.config, space)
    if header.lora is not None:  # a training checkpoint with unmerged LoRA factors
        apply_lora(model.trunk.model, header.lora)
        model.lora_config = header.lora
    load_state(
        model, model_state(view.load(k for k in view.shapes if k.startswith("model."))), path
    )
    model.store_image_size = header.store_image_size
    model.training_record = loaded_record(view.meta, path)  # kept when saved again
    return model.to(map_location).eval()
