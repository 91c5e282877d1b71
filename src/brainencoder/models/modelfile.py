"""Self-contained model files (safetensors): weights, group space and config.

A model file holds every tensor of the encoder (``model.*``: trunk, readout,
frozen embedding) and the group space (``space.*``); its header holds the
encoder config (trunk, layers, readout name and options) and the subject
names. :func:`load_encoder` rebuilds the encoder from the header alone (no
download, no pickle) and refuses files whose weights are not finite.

Format 1 (brainencoder <= 0.1, one hard-wired head) is read and converted to
the ``grouplin_seq`` readout it was.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import torch

from ..core.space import GroupSpace
from ..util.errors import CheckpointError, ConfigError
from ..util.fileio import atomic_path
from ..util.typecheck import from_mapping
from ..util.version import __version__
from .encoder import Encoder, EncoderConfig
from .readouts import READOUTS
from .trunk import TRUNK_FAMILIES

__all__ = [
    "encoder_metadata",
    "load_encoder",
    "load_state",
    "model_state",
    "read_model_file",
    "save_encoder",
]

FORMAT_VERSION = 2


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
    if lora is not None and not merge_lora:
        meta["lora"] = json.dumps(dataclasses.asdict(lora))
    meta.update(metadata or {})
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def read_model_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a model file (format 1 converted); clear errors otherwise."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: model file not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({exc}); it may be truncated"
        ) from None
    if meta.get("format") != "brainencoder-model":
        raise CheckpointError(f"{path}: not a brainencoder model file")
    version = meta.get("format_version", "")
    if version == "1":
        return _convert_v1(tensors, meta, path)
    if version != str(FORMAT_VERSION):
        raise CheckpointError(
            f"{path}: model format {version!r}, this brainencoder reads "
            f"{FORMAT_VERSION} (and 1); upgrade brainencoder"
        )
    return tensors, meta


def _convert_v1(
    tensors: dict[str, torch.Tensor], meta: dict[str, str], path: Path
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Format 1 (one ``head`` of stacked subject maps) -> the ``grouplin_seq`` readout."""
    try:
        old = json.loads(meta["config"])
        subjects = json.loads(meta["subjects"])
        readout = {
            "name": "grouplin_seq",
            "hidden_dim": old.pop("hidden_dim"),
            "latent_dim": old.pop("latent_dim"),
            "dropout": old.pop("dropout"),
        }
        old["readout"] = readout
        out: dict[str, torch.Tensor] = {}
        for key, value in tensors.items():
            m = re.fullmatch(r"model\.head\.projections\.(\d+)\.(spatial|channel)", key)
            if m:
                out[f"model.readout.projections.{m[1]}.proj.{m[2]}"] = value
            elif key in ("model.head.subject.weight", "model.head.subject.bias"):
                part = key.rsplit(".", 1)[1]
                for i, name in enumerate(subjects):
                    out[f"model.readout.per_subject.{name}.{part}"] = value[i].clone()
            elif key.startswith("model.head."):
                out["model.readout." + key[len("model.head.") :]] = value
            else:
                out[key] = value
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: damaged format-1 model file ({exc})") from None
    return out, {**meta, "config": json.dumps(old), "format_version": str(FORMAT_VERSION)}


def model_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder's state dict out of a model file's tensors."""
    return {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}


def load_state(model: Encoder, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load weights into ``model``, explaining any mismatch of configuration."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own.keys() & state.keys()
        if own[k].shape != state[k].shape
    ]
    if missing or extra or shapes:
        detail = "; ".join(
            filter(
                None,
                [
                    f"missing {missing[:5]}" if missing else "",
                    f"unexpected {extra[:5]}" if extra else "",
                    f"shape mismatch {shapes[:5]}" if shapes else "",
                ],
            )
        )
        raise CheckpointError(
            f"{source}: weights were saved from a different model configuration ({detail})"
        )
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(
            f"{source}: {len(bad)} weight tensor(s) hold NaN or inf (e.g. {bad[0]}); the run "
            "that wrote it diverged: retrain with a lower lr or use an earlier checkpoint"
        )
    model.load_state_dict(state)


def _check_registered(path: str | Path, config: Any) -> None:
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
            missing.append(f"readout {readout['name']!r} (registered: {READOUTS.names()})")
    family = config.get("trunk_family", "timm")
    if isinstance(family, str) and family not in TRUNK_FAMILIES:
        missing.append(f"trunk family {family!r} (registered: {TRUNK_FAMILIES.names()})")
    if missing:
        raise CheckpointError(
            f"{path}: the model's {' and '.join(missing)} "
            f"{'are' if len(missing) > 1 else 'is'} not registered here; if a plugin module "
            "of yours registers it, pass --plugin MODULE"
        )


def load_encoder(path: str | Path, map_location: str | torch.device = "cpu") -> Encoder:
    """Rebuild an encoder (eval mode) from a :func:`save_encoder` file; no download, no pickle.

    ``store_image_size`` is set from the header (None when the file has none).
    """
    tensors, meta = read_model_file(path)
    try:
        raw = json.loads(meta["config"])
        _check_registered(path, raw)
        config = from_mapping(EncoderConfig, raw, prefix="model.")
        subjects = json.loads(meta["subjects"])
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: damaged model header ({exc})") from None
    except ConfigError as exc:
        raise CheckpointError(f"{path}: unusable model config ({exc})") from None
    config.pretrained, config.trunk_weights = False, None  # the weights are in the file
    config.trunk_kwargs.pop("checkpoint_path", None)  # likewise (files of older versions)
    space = GroupSpace.from_arrays(
        subjects, {k[6:]: v.numpy() for k, v in tensors.items() if k.startswith("space.")}
    )
    model = Encoder(config, space)
    if "lora" in meta:  # a training checkpoint with unmerged LoRA factors
        from .lora import LoRAConfig, apply_lora

        try:
            lora = from_mapping(LoRAConfig, json.loads(meta["lora"]), prefix="lora.")
        except (ValueError, ConfigError) as exc:
            raise CheckpointError(f"{path}: damaged LoRA header ({exc})") from None
        apply_lora(model.trunk.model, lora)
        model.lora_config = lora
    load_state(model, model_state(tensors), path)
    size = meta.get("store_image_size")
    model.store_image_size = int(size) if size and size.isdigit() else None
    return model.to(map_location).eval()
