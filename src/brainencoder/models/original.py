"""Import checkpoints of the original GroupLin entry (childmindresearch/algonauts23).

The original's training script (``scripts/train_group_encoder.py``) saves
``{"epoch", "metric", "trunk", "encoder"}`` with ``torch.save``: ``encoder`` is
the state of its ``GroupLinearEncoder`` (``algonauts23/models/group_linear.py``)
and ``trunk`` the full timm model's state after phase 2 (``None`` after phase 1,
where the trunk is the pretrained timm model). Its group-PCA file
(``scripts/fit_group_pca.py``) is ``{"weight": (n_vertices, n_components),
"bias": (n_vertices,)}``. Key mapping:

=====================================  ============================================
original                               brainencoder (``grouplin`` readout)
=====================================  ============================================
``feat_projs.i.proj.weight1`` (K, T)   ``readout.projections.i.proj.spatial``
``feat_projs.i.proj.weight2`` (K, C)   ``readout.projections.i.proj.channel``
``feat_projs.i.norm.*``                ``readout.projections.i.norm.*``
``shared_proj.weight`` (L, K)          ``readout.shared.weight``
``subj_proj.fc.weight`` (G*L, K)       ``readout.per_subject.subjXX.weight`` (rows of XX)
``subj_proj.fc.bias`` (G*L,)           ``readout.per_subject.subjXX.bias``
``embed.weight`` (V, L)                ``readout.embedding.components`` (transposed)
``embed.bias`` (V,)                    ``readout.embedding.mean``
``trunk`` (timm state)                 ``trunk.model.*`` (blocks after the last layer pruned)
=====================================  ============================================

The original's subject index is the position in subj01..subj08, and its group
space the union of all subjects' masks (lh then rh, fsaverage order), the same
construction as :class:`~brainencoder.core.space.GroupSpace`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.space import GroupSpace
from ..util.errors import CheckpointError
from .encoder import Encoder, EncoderConfig

__all__ = ["import_original", "load_original_checkpoint", "original_subject_index"]

logger = logging.getLogger(__name__)

ORIGINAL_TRUNK = "eva02_base_patch14_224.mim_in22k"
ORIGINAL_LAYERS = ["blocks.[02468]", "blocks.10"]


def _safe_globals() -> list[Any]:
    """Exactly the numpy types a numpy float64 ``metric`` pickles as."""
    kinds: list[Any] = [np.dtype, type(np.dtype(np.float64))]
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    return [scalar, *kinds]


def load_original_checkpoint(path: str | Path, what: str = "checkpoint") -> dict[str, Any]:
    """Read a file of the original's ``torch.save`` with ``weights_only=True``.

    Raises
    ------
    CheckpointError
        Missing file, or a file that needs anything beyond tensors, plain
        containers and numpy scalars to load (it is refused, never executed).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} not found")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{path}: cannot read this {what} safely ({text}); only files of tensors, plain "
            "containers and numpy scalars are accepted (weights_only), nothing is executed"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict in this {what}; got {type(obj).__name__}")
    return obj


def original_subject_index(name: str) -> int:
    """Position of ``subjXX`` in the original's subj01..subj08 order (XX - 1)."""
    m = re.fullmatch(r"subj(\d{2})", name)
    if m is None or int(m[1]) < 1:
        raise CheckpointError(
            f"subject {name!r}: the original's checkpoints index subjects subj01..subj08 "
            "by number; this dataset's subject names must be subjNN"
        )
    return int(m[1]) - 1


def _tensor(state: dict[str, Any], key: str, source: Path, ndim: int | None = None) -> torch.Tensor:
    """``state[key]``, a tensor (of ``ndim`` dimensions, none of them empty, when given)."""
    value = state.get(key)
    if not isinstance(value, torch.Tensor):
        raise CheckpointError(f"{source}: key {key!r} is missing or not a tensor")
    if ndim is not None and (value.ndim != ndim or 0 in value.shape):
        raise CheckpointError(
            f"{source}: {key} has shape {tuple(value.shape)}; expected {ndim} non-empty "
            f"dimension(s): not a GroupLinearEncoder state of the original"
        )
    return value


def _check_keys(state: dict[Any, Any], what: str, source: Path) -> None:
    """Every key of a state dict is a string (torch.load accepts any key)."""
    odd = [k for k in state if not isinstance(k, str)]
    if odd:
        raise CheckpointError(
            f"{source}: the {what} has non-string key(s) {odd[:5]!r}; a state dict's keys are "
            "parameter names: not a checkpoint of the original"
        )


def _readout_state(
    encoder: dict[str, Any], subjects: list[str], source: Path
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Map the original encoder state to ours; returns (state, readout options)."""
    _check_keys(encoder, "'encoder' state", source)
    layers = sorted(
        {int(m[1]) for k in encoder if (m := re.match(r"feat_projs\.(\d+)\.proj\.weight1$", k))}
    )
    if not layers or layers != list(range(len(layers))):
        raise CheckpointError(
            f"{source}: no GroupLinearEncoder state (feat_projs.N.proj.weight1 keys) in 'encoder'"
        )
    shared = _tensor(encoder, "shared_proj.weight", source, ndim=2)
    latent, hidden = shared.shape
    fc_w = _tensor(encoder, "subj_proj.fc.weight", source, ndim=2)
    fc_b = _tensor(encoder, "subj_proj.fc.bias", source, ndim=1)
    if fc_w.shape[1] != hidden or fc_w.shape[0] % latent or fc_b.shape != fc_w.shape[:1]:
        raise CheckpointError(
            f"{source}: subj_proj.fc {tuple(fc_w.shape)} does not fit shared_proj "
            f"{tuple(shared.shape)}"
        )
    n_groups = fc_w.shape[0] // latent
    embed_w = _tensor(encoder, "embed.weight", source, ndim=2)
    embed_b = _tensor(encoder, "embed.bias", source, ndim=1)
    if embed_w.shape[1] != latent or embed_b.shape != embed_w.shape[:1]:
        raise CheckpointError(
            f"{source}: embed.weight {tuple(embed_w.shape)} and embed.bias "
            f"{tuple(embed_b.shape)} do not fit shared_proj {tuple(shared.shape)} "
            "(expected (vertices, latent) and (vertices,))"
        )
    known = re.compile(
        r"feat_projs\.\d+\.(proj\.weight[12]|norm\.(weight|bias|running_mean|running_var|"
        r"num_batches_tracked))|shared_proj\.weight|subj_proj\.fc\.(weight|bias)|embed\.(weight|bias)"
    )
    unknown = sorted(k for k in encoder if not known.fullmatch(k))
    if unknown:
        raise CheckpointError(
            f"{source}: unexpected encoder key(s) {unknown[:5]}; not a GroupLinearEncoder state"
        )
    norm = f"feat_projs.{layers[0]}.norm.weight" in encoder
    state: dict[str, torch.Tensor] = {}
    for i in layers:
        src, dst = f"feat_projs.{i}.", f"projections.{i}."
        state[dst + "proj.spatial"] = _tensor(encoder, src + "proj.weight1", source, ndim=2)
        state[dst + "proj.channel"] = _tensor(encoder, src + "proj.weight2", source, ndim=2)
        if f"{src}proj.bias" in encoder:
            raise CheckpointError(f"{source}: {src}proj.bias: a projection bias is not GroupLin's")
        if norm:
            for part in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                state[dst + "norm." + part] = _tensor(encoder, src + "norm." + part, source)
    state["shared.weight"] = shared
    for name in subjects:
        g = original_subject_index(name)
        if g >= n_groups:
            raise CheckpointError(
                f"{source}: the checkpoint has {n_groups} subjects; {name} is not among them"
            )
        state[f"per_subject.{name}.weight"] = fc_w[g * latent : (g + 1) * latent]
        state[f"per_subject.{name}.bias"] = fc_b[g * latent : (g + 1) * latent]
    state["embedding.components"] = embed_w.t().contiguous()
    state["embedding.mean"] = embed_b
    options = {"name": "grouplin", "hidden_dim": hidden, "latent_dim": latent, "norm": norm}
    return {f"readout.{k}": v.float() if v.is_floating_point() else v for k, v in state.items()}, (
        options
    )


def _check_pca(pca_path: Path, state: dict[str, torch.Tensor]) -> None:
    """The PCA file must be the checkpoint's frozen embedding (first L components)."""
    pca = load_original_checkpoint(pca_path, "group-PCA file")
    weight, bias = _tensor(pca, "weight", pca_path), _tensor(pca, "bias", pca_path)
    comps = state["readout.embedding.components"]
    latent, n_vertices = comps.shape
    if weight.ndim != 2 or weight.shape[0] != n_vertices or weight.shape[1] < latent:
        raise CheckpointError(
            f"{pca_path}: weight {tuple(weight.shape)} does not fit the checkpoint's embedding "
            f"({n_vertices} vertices x {latent} components)"
        )
    if bias.shape != (n_vertices,):
        raise CheckpointError(
            f"{pca_path}: bias {tuple(bias.shape)} does not fit the checkpoint's embedding "
            f"(expected ({n_vertices},), one value per vertex)"
        )
    same = torch.allclose(weight[:, :latent].t().float(), comps, atol=1e-6) and torch.allclose(
        bias.float(), state["readout.embedding.mean"], atol=1e-6
    )
    if not same:
        raise CheckpointError(
            f"{pca_path}: this PCA differs from the embedding stored in the checkpoint; "
            "pass the PCA file the model was trained with (or leave --pca out)"
        )


def import_original(
    checkpoint: str | Path,
    space: GroupSpace,
    pca: str | Path | None = None,
    trunk: str = ORIGINAL_TRUNK,
    layers: list[str] | list[int] | None = None,
    trunk_weights: str | Path | None = None,
    img_size: int | None = None,
) -> Encoder:
    """Build a brainencoder model from a checkpoint of the original entry.

    Parameters
    ----------
    checkpoint : path
        ``ckpt-best.pt`` / ``ckpt-last.pt`` of the original training script.
    space : GroupSpace
        The group space of the data (subjects subjNN); its vertex count must
        equal the checkpoint's output size.
    pca : path, optional
        The original's group-PCA file; checked against the embedding stored
        in the checkpoint (which is what the model uses).
    trunk : str, default="eva02_base_patch14_224.mim_in22k"
        timm model the original was trained with.
    layers : list, default=["blocks.[02468]", "blocks.10"]
    trunk_weights : path, optional
        Local pretrained weights for a phase-1 checkpoint (``trunk: None``);
        without them the pretrained weights come from the hub or its cache.
    img_size : int, optional
        Input size (default: the trunk's pretrained config, as the original).

    Returns
    -------
    Encoder
        In eval mode; save it with :func:`~brainencoder.models.modelfile.save_encoder`.
    """
    checkpoint = Path(checkpoint)
    ckpt = load_original_checkpoint(checkpoint)
    encoder_state = ckpt.get("encoder")
    if not isinstance(encoder_state, dict):
        raise CheckpointError(
            f"{checkpoint}: no 'encoder' state; is this a checkpoint of the original's "
            "train_group_encoder.py?"
        )
    state, options = _readout_state(encoder_state, space.subjects, checkpoint)
    n_out = state["readout.embedding.mean"].shape[0]
    if n_out != space.n_vertices:
        raise CheckpointError(
            f"{checkpoint}: the model predicts {n_out} vertices but the data's group space has "
            f"{space.n_vertices}; use the data (all subjects' masks) it was trained on"
        )
    if pca is not None:
        _check_pca(Path(pca), state)
    trunk_state = ckpt.get("trunk")
    if trunk_state is not None and not isinstance(trunk_state, dict):
        raise CheckpointError(f"{checkpoint}: 'trunk' must be a state dict or None")
    if trunk_state is not None:
        _check_keys(trunk_state, "'trunk' state", checkpoint)
        odd = [k for k, v in trunk_state.items() if not isinstance(v, torch.Tensor)]
        if odd:
            raise CheckpointError(
                f"{checkpoint}: the 'trunk' state holds non-tensor value(s) (e.g. {odd[0]!r}); "
                "not a timm model's state dict"
            )
    config = EncoderConfig(
        trunk=trunk,
        layers=list(layers or ORIGINAL_LAYERS),
        pretrained=trunk_state is None,
        trunk_weights=None if trunk_weights is None else str(trunk_weights),
        img_size=img_size,
        prefix_tokens=True,
        readout=options,
    )
    model = Encoder(config, space)
    own = model.state_dict()
    if trunk_state is not None:
        kept = {f"trunk.model.{k}": v for k, v in trunk_state.items() if f"trunk.model.{k}" in own}
        missing = sorted(k for k in own if k.startswith("trunk.") and k not in kept)
        if missing:
            raise CheckpointError(
                f"{checkpoint}: the trunk state lacks {len(missing)} tensor(s) of {trunk} "
                f"(e.g. {missing[0][len('trunk.model.') :]}); is --trunk the model it was "
                "trained with?"
            )
        logger.info(
            "trunk: %d tensors loaded, %d of layers after the last chosen one dropped",
            len(kept),
            len(trunk_state) - len(kept),
        )
        state.update(kept)
    else:  # phase 1: the pretrained trunk, as loaded by Encoder
        state.update({k: v for k, v in own.items() if k.startswith("trunk.")})
    from .modelfile import load_state

    load_state(model, state, checkpoint)
    model.config.pretrained, model.config.trunk_weights = False, None  # weights are in the model
    return model.eval()
