"""What a Hugging Face trunk reads from its folder, its cache or a model header, checked.

Every value is checked before anything is allocated or run, and a bad one is a
one-line :class:`ConfigError` naming the file (or the header key) and what to
do: ``config.json`` and ``preprocessor_config.json`` must be JSON objects of at
most 1 MiB; a config with ``auto_map`` (custom code) is refused, never run or
prompted for; ``image_mean`` / ``image_std`` are 3 finite numbers (std > 0);
every image size is at most :data:`MAX_IMAGE_SIZE` pixels and the architecture
at most :data:`MAX_PARAMETERS` parameters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..util.errors import ConfigError
from .hf_checks import HEADER, check_image_size

__all__ = [
    "HF_VISION_MODELS",
    "HOW_TO_GET",
    "locate",
    "processor_size",
    "read_config",
    "read_processor",
    "refuse_custom_code",
    "vision_config",
]

_MAX_JSON_BYTES = 1 << 20
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
_HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

#: supported ``model_type`` -> (transformers class, default (mean, std) when the
#: model has no preprocessor_config.json)
HF_VISION_MODELS: dict[str, tuple[str, tuple[tuple[float, ...], tuple[float, ...]]]] = {
    "dinov2": ("Dinov2Model", _IMAGENET),
    "dinov2_with_registers": ("Dinov2WithRegistersModel", _IMAGENET),
    "clip_vision_model": ("CLIPVisionModel", _CLIP),
    "siglip_vision_model": ("SiglipVisionModel", _HALF),
}
HOW_TO_GET = (
    "on a machine with network run 'hf download {name}' (older huggingface_hub: "
    "'huggingface-cli download {name}') and copy the cache here (or point HF_HUB_CACHE at it), "
    "or download it into a folder ('hf download {name} --local-dir DIR') and set "
    "model.trunk=hf:DIR"
)


def locate(name: str) -> Path | None:
    """The model's local folder, or None for a hub id found in the local cache.

    Parameters
    ----------
    name : str
        A folder path or a hub id (``facebook/dinov2-base``).

    Returns
    -------
    Path or None
    """
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1:
        raise ConfigError(
            f"Hugging Face trunk folder {name} not found; set model.trunk=hf:DIR to a folder "
            "written by save_pretrained or 'hf download NAME --local-dir DIR'"
        )
    from huggingface_hub import constants, try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(name, "config.json"), str):
        raise ConfigError(
            f"Hugging Face model {name!r} is not in the local cache {constants.HF_HUB_CACHE} "
            f"(trunks load offline): {HOW_TO_GET.format(name=name)}"
        )
    return None


def _file(name: str, folder: Path | None, filename: str) -> Path | None:
    """``folder/filename``, or the cached file of hub id ``name`` (None when there is none)."""
    if folder is not None:
        path: Any = folder / filename
    else:
        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache(name, filename)
    return Path(path) if isinstance(path, str | Path) and Path(path).is_file() else None


def _read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object of at most 1 MiB; anything else is a one-line ConfigError."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(_MAX_JSON_BYTES + 1)
        if len(raw) > _MAX_JSON_BYTES:
            raise ConfigError(
                f"{path}: larger than 1 MiB, too large for a {what}; "
                "replace it with one written by save_pretrained"
            )
        data = json.loads(raw)
    except ConfigError:
        raise
    except (OSError, ValueError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise ConfigError(
            f"{path}: unreadable {what} ({detail}); replace it with one written by save_pretrained"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: a {what} is a JSON object of settings, not a {type(data).__name__}; "
            "replace it with one written by save_pretrained"
        )
    return data


def read_config(transformers: Any, name: str, folder: Path | None) -> Any:
    """The model config of a folder or of the cache, read offline; custom code is refused.

    ``config.json`` is read here first: one with ``auto_map`` (code shipped
    with the model) is refused before transformers sees it, so nothing is run
    and nobody is asked. transformers then reads it with
    ``trust_remote_code=False`` and ``local_files_only=True``.

    Parameters
    ----------
    transformers : module
    name : str
        The hub id or folder, as the user gave it.
    folder : Path or None
        The folder (None: the hub id's cached files).

    Returns
    -------
    transformers.PretrainedConfig
    """
    path = _file(name, folder, "config.json")
    if path is None:
        raise ConfigError(
            f"{folder or name}: no config.json; a Hugging Face model folder is written by "
            "save_pretrained or 'hf download NAME --local-dir DIR'"
        )
    data = _read_json(path, "Hugging Face config")
    refuse_custom_code(data, str(path))
    try:
        return transformers.AutoConfig.from_pretrained(
            str(folder) if folder is not None else name,
            local_files_only=True,
            trust_remote_code=False,
        )
    except (OSError, ValueError, TypeError, KeyError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise ConfigError(f"{path}: unreadable Hugging Face config ({detail})") from None


def refuse_custom_code(config: dict[str, Any], source: str) -> None:
    """Refuse a config that ships code (``auto_map``): it is never run.

    Parameters
    ----------
    config : dict
        The config as JSON data.
    source : str
        Where it came from, as the message names it.
    """
    if "auto_map" in config:
        raise ConfigError(
            f"{source}: the model ships its own code (auto_map), and custom code is never run "
            "here; use a DINOv2, CLIP or SigLIP model that transformers implements itself"
        )


def read_processor(name: str, folder: Path | None) -> tuple[dict[str, Any], str]:
    """``preprocessor_config.json`` of the folder or cache and its path ({} when there is none).

    Parameters
    ----------
    name : str
    folder : Path or None

    Returns
    -------
    settings : dict
    source : str
        The file's path (messages name it).
    """
    path = _file(name, folder, "preprocessor_config.json")
    if path is None:
        return {}, ""
    return _read_json(path, "preprocessor config"), str(path)


def processor_size(processor: dict[str, Any], source: str) -> int | None:
    """The side the preprocessor feeds the model (its crop, else its resize), if square.

    Parameters
    ----------
    processor : dict
        The preprocessor config.
    source : str
        Its path.

    Returns
    -------
    int or None
        None when it gives no square size.
    """
    key = "size"
    if processor.get("do_center_crop", True) and processor.get("crop_size"):
        key = "crop_size"
    size = processor.get(key)
    if isinstance(size, dict):
        sides = [size.get("height"), size.get("width")]
        for side, name in zip(sides, ("height", "width"), strict=True):
            if side is not None:
                check_image_size(side, f"{key}.{name}", source)
        size = sides[0] if sides[0] == sides[1] else None
    elif size is not None:
        size = check_image_size(size, key, source)
    return size


def vision_config(
    transformers: Any,
    model_name: str,
    folder: Path | None,
    resolved: dict[str, Any],
    given: str = HEADER,
) -> Any:
    """The vision config: from ``resolved["config"]`` (a header) or the folder / cache.

    Parameters
    ----------
    transformers : module
    model_name : str
        The folder or hub id.
    folder : Path or None
        The folder (None: a hub id's cached files, or a header's config).
    resolved : dict
        What the caller passed (``config``: the header's, as JSON data).
    given : str, default=HEADER
        Where a passed ``config`` came from, as messages name it.

    Returns
    -------
    transformers.PretrainedConfig
        The vision config (a full CLIP / SigLIP config gives its vision tower's).
    """
    if "config" in resolved:
        data = resolved["config"]
        if not isinstance(data, dict):
            raise ConfigError(f"{given}: trunk_kwargs.config must be a mapping of settings")
        data = dict(data)
        refuse_custom_code(data, f"{given} (trunk_kwargs.config)")
        model_type = data.pop("model_type", None)
        if model_type not in (*HF_VISION_MODELS, "clip", "siglip"):
            raise ConfigError(
                f"{given}: trunk_kwargs.config is a {model_type!r} model; supported: "
                f"{sorted(HF_VISION_MODELS)} (and full clip / siglip checkpoints)"
            )
        try:
            config = transformers.AutoConfig.for_model(model_type, **data)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            detail = " ".join(str(exc).split())[:200]
            raise ConfigError(f"{given}: unusable trunk_kwargs.config ({detail})") from None
    else:
        config = read_config(transformers, model_name, folder)
    config = getattr(config, "vision_config", config)  # a full CLIP / SigLIP checkpoint
    if config.model_type not in HF_VISION_MODELS:
        raise ConfigError(
            f"Hugging Face trunk {model_name!r} is a {config.model_type!r} model; supported: "
            f"{sorted(HF_VISION_MODELS)} (and full clip / siglip checkpoints)"
        )
    return config
