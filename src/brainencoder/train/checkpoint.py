"""Run directories and resumable checkpoints.

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

import json
import logging
import os
import random
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from ..fileio import read_json, write_json_atomic
from ..models.encoder import Encoder
from ..models.modelfile import save_encoder

__all__ = ["RunDir", "git_revision"]

logger = logging.getLogger(__name__)


def git_revision() -> str | None:
    """The git revision of the installed source tree, if it is a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


class RunDir:
    """Paths and checkpoint I/O of one training run."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def finished(self) -> bool:
        return (self.path / "summary.json").exists()

    def latest_checkpoint(self) -> Path | None:
        pointer = self.checkpoints / "latest.json"
        if not pointer.exists():
            return None
        data = read_json(pointer, "checkpoint pointer")
        name = data.get("name") if isinstance(data, dict) else None
        if not isinstance(name, str) or not re.fullmatch(r"step-\d{9}(-[0-9a-f]{8})?", name):
            raise CheckpointError(
                f"{pointer}: damaged checkpoint pointer (expected {{'name': 'step-NNNNNNNNN'}}); "
                "delete it to resume from scratch, or restore it"
            )
        ckpt = self.checkpoints / name
        if not (ckpt / "state.json").exists():
            raise CheckpointError(f"{pointer} names {ckpt}, which is incomplete or missing")
        return ckpt

    def model_file(self) -> Path:
        """The model to use for predictions: the best one, else the latest checkpoint's."""
        best = self.path / "best.safetensors"
        if best.exists():
            return best
        latest = self.latest_checkpoint() if self.checkpoints.exists() else None
        if latest is None:
            raise CheckpointError(
                f"{self.path}: no model found (not a run directory, or the "
                "run has not finished an epoch yet)"
            )
        return latest / "model.safetensors"

    def save_checkpoint(
        self,
        model: Encoder,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        state: dict[str, Any],
    ) -> Path:
        """Write a complete checkpoint and point ``latest.json`` to it."""
        name = f"step-{state['step']:09d}"
        if (self.checkpoints / name).exists():
            # a resumed run saving its starting step again: never delete the folder
            # latest.json names before the pointer moves (a kill there would lose both)
            name = f"{name}-{uuid.uuid4().hex[:8]}"
        final = self.checkpoints / name
        tmp = self.checkpoints / f".{name}.tmp"
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
        write_json_atomic(self.checkpoints / "latest.json", {"name": name})
        for old in self.checkpoints.iterdir():
            if old.is_dir() and old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        return final

    @staticmethod
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

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.path / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def truncate_metrics(self, step: int) -> None:
        """Drop records logged after ``step`` (they will be logged again on resume)."""
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if record.get("step", 0) <= step:
                keep.append(line)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(f"{x}\n" for x in keep))
        os.replace(tmp, path)

    def read_metrics(self) -> list[dict[str, Any]]:
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        records = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s line %d: cut or damaged record skipped", path, number)
                continue
            if isinstance(record, dict):
                records.append(record)
        return records
