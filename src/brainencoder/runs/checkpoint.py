"""Resumable checkpoints of a training run (``RUN/checkpoints``).

A run directory::

    RUN/config.yaml             resolved config, package version, git revision, store
    RUN/metrics.jsonl           one JSON record per logged step and per epoch
    RUN/checkpoints/latest.json name of the newest complete checkpoint
    RUN/checkpoints/step-N/     model.safetensors, state.pt, state.json
    RUN/best.safetensors        best model so far (self-contained), best.json
    RUN/summary.json            written last: the run finished

A checkpoint folder is written completely under a temporary name, renamed,
and only then named in ``latest.json`` (atomically); older ones are removed
afterwards. ``state.pt`` holds only tensors and plain containers and is read
with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.encoder import Encoder
from ..models.modelfile import save_encoder
from ..util.errors import CheckpointError
from ..util.fileio import read_json, write_json_atomic

__all__ = ["latest_checkpoint", "load_checkpoint", "save_checkpoint"]

logger = logging.getLogger(__name__)


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint in ``folder`` (``RUN/checkpoints``), or None."""
    pointer = folder / "latest.json"
    if not pointer.exists():
        return None
    data = read_json(pointer, "checkpoint pointer")
    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str) or not re.fullmatch(r"step-\d{9}(-[0-9a-f]{8})?", name):
        raise CheckpointError(
            f"{pointer}: damaged checkpoint pointer (expected {{'name': 'step-NNNNNNNNN'}}); "
            "delete it to resume from scratch, or restore it"
        )
    ckpt = folder / name
    if not (ckpt / "state.json").exists():
        raise CheckpointError(f"{pointer} names {ckpt}, which is incomplete or missing")
    return ckpt


def save_checkpoint(
    folder: Path,
    model: Encoder,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    state: dict[str, Any],
) -> Path:
    """Write a complete checkpoint into ``folder`` and point ``latest.json`` to it."""
    name = f"step-{state['step']:09d}"
    if (folder / name).exists():
        # a resumed run saving its starting step again: never delete the folder
        # latest.json names before the pointer moves (a kill there would lose both)
        name = f"{name}-{uuid.uuid4().hex[:8]}"
    final = folder / name
    tmp = folder / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_encoder(model, tmp / "model.safetensors", merge_lora=False)
    tensors = {
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        tensors["cuda_rng"] = torch.cuda.get_rng_state_all()
    torch.save(tensors, tmp / "state.pt")
    np_state = np.random.get_state()  # noqa: NPY002 (global state of user code)
    meta = dict(state)
    meta["numpy_rng"] = [np_state[0], np_state[1].tolist(), *np_state[2:]]
    py_state = random.getstate()
    meta["python_rng"] = [py_state[0], list(py_state[1]), py_state[2]]
    write_json_atomic(tmp / "state.json", meta)
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    os.replace(tmp, final)
    write_json_atomic(folder / "latest.json", {"name": name})
    for old in folder.iterdir():
        if old.is_dir() and old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(
    ckpt: Path, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler
) -> dict[str, Any]:
    """Restore optimizer, scaler and RNG states; return the training state."""
    try:
        tensors = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign files raise many types
        raise CheckpointError(f"{ckpt / 'state.pt'}: cannot load ({exc})") from None
    try:
        optimizer.load_state_dict(tensors["optimizer"])
    except (ValueError, KeyError) as exc:
        raise CheckpointError(
            f"{ckpt}: optimizer state does not fit this model configuration ({exc})"
        ) from None
    scaler.load_state_dict(tensors["scaler"])
    torch.set_rng_state(tensors["torch_rng"])
    if "cuda_rng" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(tensors["cuda_rng"])
    state = read_json(ckpt / "state.json", "checkpoint state")
    try:
        np_rng = state.pop("numpy_rng")
        restored = (np_rng[0], np.asarray(np_rng[1], dtype=np.uint32), *np_rng[2:])
        np.random.set_state(restored)  # noqa: NPY002
        py_rng = state.pop("python_rng")
        random.setstate((py_rng[0], tuple(py_rng[1]), py_rng[2]))
        for key in ("epoch", "batch_in_epoch", "step"):
            if not isinstance(state[key], int) or state[key] < 0:
                raise ValueError(f"{key} = {state[key]!r}")
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise CheckpointError(
            f"{ckpt / 'state.json'}: damaged checkpoint state ({exc}); this checkpoint "
            "cannot resume the run: start it again with --overwrite"
        ) from None
    return state
