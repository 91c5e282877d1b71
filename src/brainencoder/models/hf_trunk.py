"""Hugging Face ``transformers`` vision backbones as trunks (the ``"hf"`` trunk family).

``model.trunk=hf:facebook/dinov2-base`` reads a hub model from the local
Hugging Face cache, ``model.trunk=hf:/path/to/folder`` a folder written by
``save_pretrained`` (or ``hf download NAME --local-dir DIR``). Loading is
always offline (``local_files_only=True``); a model that is not there is a
one-line :class:`ConfigError` saying where it looked and how to get it.
Nothing a folder holds is run: a config with ``auto_map`` (code shipped with
the model) is refused (``trust_remote_code=False``, never a prompt), pickled
weights are read with ``weights_only``, and every value read is checked
first (:mod:`.hf_files`, :mod:`.hf_checks`).

Supported: DINOv2 (with or without register tokens), and the vision towers of
CLIP and SigLIP (a full CLIP or SigLIP checkpoint gives its vision tower).
:class:`HFVisionTrunk` puts timm's feature interface around them: the layers
are ``blocks.0`` .. ``blocks.{n-1}`` (the transformer blocks' outputs, as in
timm's ViTs), returned as (B, C, H/p, W/p) maps of the patch tokens; the class
and register tokens are the prefix tokens (``prefix_tokens: true``). Blocks after
the last chosen one, the final norm and any pooling head are dropped.

The architecture, input size and mean/std read from the folder are recorded
in :attr:`HFVisionTrunk.resolved_kwargs` (the encoder stores them in
``trunk_kwargs``), so a model file is rebuilt without the folder: with
``from_header=True`` it is rebuilt from them alone, and the folder is never read.

>>> trunk = Trunk("hf:/models/dinov2-small", layers=[3, 7, 11])   # doctest: +SKIP
>>> [f.shape for f in trunk(torch.zeros(1, 3, 224, 224))]         # doctest: +SKIP
[torch.Size([1, 384, 16, 16]), torch.Size([1, 384, 16, 16]), torch.Size([1, 384, 16, 16])]
"""

from __future__ import annotations

import contextlib
import fnmatch
import inspect
import json
import logging
import pickle
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..util.errors import ConfigError
from .hf_checks import HEADER, check_architecture, check_header, check_image_size, check_stats
from .hf_files import (
    HF_VISION_MODELS,
    HOW_TO_GET,
    locate,
    processor_size,
    read_processor,
    vision_config,
)

__all__ = ["HF_VISION_MODELS", "HFVisionTrunk", "hf_trunk"]

logger = logging.getLogger(__name__)

# the attention input projections (transformers 5 names, then 4.x DINOv2's)
_QKV = ("q_proj", "k_proj", "v_proj", "attention.query", "attention.key", "attention.value")
_RESOLVED = ("config", "mean", "std", "input_size")


class HFVisionTrunk(nn.Module):
    """A transformers ViT-like vision model behind timm's feature interface.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A model of :data:`HF_VISION_MODELS` (its embeddings, optional
        pre-norm and blocks are kept; the rest is dropped).
    resolved_kwargs : dict
        Keyword arguments of :func:`hf_trunk` that rebuild it without files.

    Attributes
    ----------
    feature_info : list of dict
        ``{"module": "blocks.i", "num_chs": C, "reduction": patch_size}`` per block.
    num_prefix_tokens : int
        Class and register tokens before the patch tokens.
    lora_targets : list of str
        fnmatch patterns of the attention input projections (LoRA's default targets).
    """

    def __init__(self, model: nn.Module, resolved_kwargs: dict[str, Any]) -> None:
        super().__init__()
        config = model.config
        root = getattr(model, "vision_model", model)  # transformers 4.x nests CLIP/SigLIP towers
        self.embeddings = root.embeddings
        if getattr(self.embeddings, "mask_token", None) is not None:
            self.embeddings.mask_token = None  # DINOv2's masked pretraining only: never used
        pre = getattr(root, "pre_layrnorm", None)  # CLIP's norm before the first block
        self.norm_pre = pre if pre is not None else nn.Identity()
        encoder = root.encoder
        self.blocks = encoder.layer if hasattr(encoder, "layer") else encoder.layers
        self.patch_size = int(config.patch_size)
        has_cls = config.model_type != "siglip_vision_model"
        self.num_prefix_tokens = int(has_cls) + int(getattr(config, "num_register_tokens", 0) or 0)
        width = int(config.hidden_size)
        self.feature_info = [
            {"module": f"blocks.{i}", "num_chs": width, "reduction": self.patch_size}
            for i in range(len(self.blocks))
        ]
        linear = [n for n, m in self.named_modules() if isinstance(m, nn.Linear)]
        patterns = [f"blocks.*.{p}" for p in _QKV]
        self.lora_targets = [p for p in patterns if fnmatch.filter(linear, p)]
        self.resolved_kwargs = resolved_kwargs
        embed_args = inspect.signature(self.embeddings.forward).parameters
        self._interpolate = "interpolate_pos_encoding" in embed_args
        # positional arguments a block requires after the tokens (attention masks: None)
        args = list(inspect.signature(self.blocks[0].forward).parameters.values())[1:]
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        self._block_args = sum(a.default is a.empty and a.kind in positional for a in args)

    def prune_intermediate_layers(
        self, indices: Sequence[int], prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the blocks after the last of ``indices`` (timm's signature)."""
        n = len(self.blocks)
        kept = sorted(i % n for i in indices)
        self.blocks = self.blocks[: kept[-1] + 1]
        return kept

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Sequence[int] | None = None,
        intermediates_only: bool = True,
        return_prefix_tokens: bool = False,
    ) -> list[Any]:
        """Outputs of the chosen blocks as maps of the patch tokens.

        Parameters
        ----------
        x : Tensor of shape (B, 3, H, W)
            Normalized images (H and W multiples of the patch size).
        indices : sequence of int, optional
            Blocks to return; default every kept block.
        intermediates_only : bool, default=True
            Only True is supported (there is no final output here).
        return_prefix_tokens : bool, default=False
            Return ``(map, prefix)`` pairs, prefix of shape (B, n_prefix, C).

        Returns
        -------
        list of Tensor of shape (B, C, H/p, W/p), or of (map, prefix) pairs
        """
        if not intermediates_only:
            raise ValueError("HFVisionTrunk returns intermediates only")
        n = len(self.blocks)
        take = {i % n for i in (range(n) if indices is None else indices)}
        kwargs = {"interpolate_pos_encoding": True} if self._interpolate else {}
        h = self.norm_pre(self.embeddings(x, **kwargs))
        rows, cols = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        prefix = h.shape[1] - rows * cols
        out: list[Any] = []
        for i, block in enumerate(self.blocks):
            h = block(h, *([None] * self._block_args))
            h = h[0] if isinstance(h, tuple) else h  # transformers 4.x returns tuples
            if i in take:
                maps = h[:, prefix:].transpose(1, 2).reshape(h.shape[0], -1, rows, cols)
                out.append((maps, h[:, :prefix]) if return_prefix_tokens else maps)
            if len(out) == len(take):
                break
        return out

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Maps of every kept block (see :meth:`forward_intermediates`)."""
        return self.forward_intermediates(x)


def hf_trunk(
    model_name: str,
    pretrained: bool = False,
    weights: str | Path | None = None,
    img_size: int | None = None,
    from_header: bool = False,
    **kwargs: Any,
) -> tuple[nn.Module, dict[str, Any]]:
    """A transformers vision model (local folder or cache, offline) and its data config.

    Parameters
    ----------
    model_name : str
        A hub id in the local Hugging Face cache (``"facebook/dinov2-base"``)
        or a model folder (``config.json``, weights, optional ``preprocessor_config.json``).
    pretrained : bool, default=False
        Load the weights; else random weights of the same architecture.
    weights : None
        Not used (point ``model_name`` at a folder instead).
    img_size : int, optional
        Input side; default the preprocessor's crop size (else the config's image size).
    from_header : bool, default=False
        Rebuild from ``kwargs`` alone (a model file's header): ``config`` is
        required, and ``model_name`` is never opened nor looked up.
    **kwargs
        ``config`` (the model config as a dict: no ``config.json`` is read),
        ``mean``, ``std``, ``input_size`` (else from the folder or cache, or the
        family's defaults); any other key sets that attribute of the model
        config (``drop_path_rate=0.1``).

    Returns
    -------
    model : HFVisionTrunk
    data_config : dict
        ``input_size`` (3, S, S), ``mean``, ``std``.

    Raises
    ------
    ConfigError
        On one line, naming the file or header key: a model that is missing,
        ships its own code (``auto_map``), has malformed settings or sizes
        beyond :data:`~.hf_checks.MAX_IMAGE_SIZE` / :data:`~.hf_checks.MAX_PARAMETERS`,
        or weights that cannot be read safely.
    """
    try:
        import transformers
    except ImportError:
        raise ConfigError(
            "Hugging Face trunks need transformers: pip install 'brainencoder[hf]'"
        ) from None
    if weights is not None:
        raise ConfigError(
            "'model.trunk_weights' is for timm trunks; point model.trunk=hf:FOLDER at the "
            "Hugging Face model's folder instead"
        )
    resolved = {k: v for k in _RESOLVED if (v := kwargs.pop(k, None)) is not None}
    needs_files = pretrained or set(resolved) != set(_RESOLVED)
    if from_header:
        check_header(model_name, pretrained, resolved)
        needs_files = False
    folder = locate(model_name) if needs_files else None
    given = HEADER if from_header else "the config"  # where values passed in came from
    source = given if "config" in resolved else f"{folder or model_name}/config.json"
    config = vision_config(transformers, model_name, folder, resolved, given)
    for key, value in kwargs.items():
        settable = not key.startswith("_") and key != "model_type" and hasattr(config, key)
        if not settable or callable(getattr(config, key)):
            raise ConfigError(
                f"'trunk_kwargs.{key}' is not a setting of the {config.model_type} config; "
                "remove it from the config"
            )
        setattr(config, key, value)
    check_architecture(config, source)
    class_name, (mean, std) = HF_VISION_MODELS[config.model_type]
    processor, where = read_processor(model_name, folder) if needs_files else ({}, "")
    for key, default in (("mean", mean), ("std", std)):
        if key in resolved:
            resolved[key] = check_stats(resolved[key], f"trunk_kwargs.{key}", given)
        else:
            resolved[key] = check_stats(
                processor.get(f"image_{key}", default), f"image_{key}", where
            )
    if "input_size" in resolved:
        check_image_size(resolved["input_size"], "trunk_kwargs.input_size", given)
    else:
        resolved["input_size"] = processor_size(processor, where) or int(config.image_size)
    size = check_image_size(img_size or resolved["input_size"], "the input size", "model.img_size")
    if size < config.patch_size:
        raise ConfigError(
            f"model.img_size: input size {size} is smaller than the trunk's patch size "
            f"{config.patch_size}; set model.img_size to at least {config.patch_size}"
        )
    model = _build_model(transformers, class_name, config, model_name, folder, pretrained)
    resolved["config"] = _config_dict(config)
    logger.info(
        "Hugging Face trunk %s (%s, %s weights)",
        model_name,
        class_name,
        "pretrained" if pretrained else "random",
    )
    data_config = {
        "input_size": (3, size, size),
        "mean": tuple(resolved["mean"]),
        "std": tuple(resolved["std"]),
        "interpolation": "bicubic",
        "crop_pct": 1.0,
    }
    return HFVisionTrunk(model.float().eval(), resolved), data_config


def _build_model(
    transformers: Any,
    class_name: str,
    config: Any,
    model_name: str,
    folder: Path | None,
    pretrained: bool,
) -> nn.Module:
    """The transformers model: random weights, or read offline from the folder / cache."""
    from safetensors import SafetensorError  # a dependency of transformers

    cls = getattr(transformers, class_name)
    with _quiet(transformers):
        if not pretrained:
            try:
                return cls(config)
            except (TypeError, ValueError) as exc:
                detail = " ".join(str(exc).split())[:200]
                raise ConfigError(
                    f"Hugging Face trunk {model_name!r}: its config builds no model ({detail}); "
                    "use the config.json written by save_pretrained"
                ) from None
        source = str(folder) if folder is not None else model_name
        try:
            model, info = cls.from_pretrained(
                source,
                config=config,
                local_files_only=True,
                trust_remote_code=False,
                weights_only=True,
                output_loading_info=True,
            )
        except pickle.UnpicklingError as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            why = next((line for line in lines if "GLOBAL" in line), lines[0] if lines else "")
            raise ConfigError(
                f"{_weights_file(folder, model_name)}: cannot read these weights safely "
                f"({why[:200]}); only tensors are read (weights_only), nothing is executed: "
                "save the model with save_pretrained (model.safetensors)"
            ) from None
        except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            fix = HOW_TO_GET.format(name=model_name)
            if folder is not None or not isinstance(exc, OSError):  # there, but not usable
                fix = "write the model's weights there with save_pretrained (model.safetensors)"
            raise ConfigError(
                f"cannot load the weights of Hugging Face trunk {model_name!r} from {source} "
                f"({first[:200]}); {fix}"
            ) from None
    missing = info.get("missing_keys") or []
    if missing:
        logger.warning(
            "%s: %d weights not in the checkpoint, left random (e.g. %s)",
            model_name,
            len(missing),
            sorted(missing)[0],
        )
    return model


def _weights_file(folder: Path | None, model_name: str) -> str:
    """The pickled weights file transformers read (messages name it)."""
    if folder is None:
        return model_name
    found = sorted(folder.glob("pytorch_model*.bin"))
    return str(found[0]) if found else str(folder)


def _config_dict(config: Any) -> dict[str, Any]:
    """The model config as JSON-ready data (non-default values, no version stamps)."""
    data = config.to_diff_dict()
    for key in ("transformers_version", "architectures", "_name_or_path", "torch_dtype", "dtype"):
        data.pop(key, None)
    data["model_type"] = config.model_type
    return json.loads(json.dumps(data))


@contextlib.contextmanager
def _quiet(transformers: Any) -> Iterator[None]:
    """No progress bars or load reports from transformers (our log says what was loaded)."""
    hf_logging = transformers.utils.logging
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
