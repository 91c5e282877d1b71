"""Experiment tracking: TensorBoard and Weights & Biases (offline) log what metrics.jsonl holds."""

from __future__ import annotations

import json
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from brainencoder.runs.run import Run
from brainencoder.training.config import TrainConfig, load_config
from brainencoder.training.loop import train
from brainencoder.training.tracking import Tracker, scalars
from brainencoder.util.errors import ConfigError
from conftest import TINY_TRAIN

# the trackers keep float32 (TensorBoard's simple_value); metrics.jsonl keeps float64
RTOL, ATOL = 1e-6, 1e-7


def _config(tmp_path: Path, *extra: str) -> TrainConfig:
    cache = f"cache_dir={tmp_path / 'cache'}"
    return load_config(None, [*TINY_TRAIN, cache, "log_every=1", *extra])


def _expected(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value), ...] of metrics.jsonl, in the order logged."""
    out: dict[str, list[tuple[int, float]]] = {}
    for record in Run(run_dir).read_metrics():
        for key, value in scalars(record).items():
            out.setdefault(key, []).append((record["step"], float(value)))
    return out


def _tensorboard(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(Run(run_dir).tensorboard_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def _assert_same(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)
    for tag, pairs in expected.items():
        steps, values = zip(*pairs)
        got_steps, got_values = zip(*got[tag])
        assert got_steps == steps, tag
        np.testing.assert_allclose(got_values, values, rtol=RTOL, atol=ATOL, err_msg=tag)


def test_tensorboard_logs_the_scalars_of_metrics_jsonl_and_a_resume_hides_orphans(store, tmp_path):
    cfg = _config(tmp_path, "tensorboard=true")
    run_dir = tmp_path / "run"
    assert train(cfg, store.path, run_dir, stop_after_steps=3) == {"stopped_at_step": 3}
    aside = tmp_path / "checkpoints-at-3"
    shutil.copytree(Run(run_dir).checkpoints, aside)
    # steps 4-5 logged, then "killed" before their checkpoint: the resume logs them again
    train(cfg, store.path, run_dir, resume=True, stop_after_steps=5)
    shutil.rmtree(Run(run_dir).checkpoints)
    shutil.copytree(aside, Run(run_dir).checkpoints)
    assert train(cfg, store.path, run_dir, resume=True)["finished"]

    expected = _expected(run_dir)
    assert {"train/loss", "lr", "epoch", "val/r2_median", "best", "epoch_seconds"} <= set(expected)
    assert [s for s, _ in expected["train/loss"]] == list(range(1, len(expected["lr"]) + 1))
    assert len(list(Run(run_dir).tensorboard_dir.glob("events.out.tfevents.*"))) == 3
    _assert_same(_tensorboard(run_dir), expected)
    assert not (run_dir / "wandb").exists()
    assert Tracker.open(TrainConfig(), Run(run_dir)) is None  # nothing enabled: no tracker


def _wandb_records(path: Path) -> list:
    """The records of a W&B transaction log (``run-ID.wandb``: a LevelDB-format log)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, chunk, records = path.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"  # then a 2-byte magic and a version byte
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768  # blocks of 32 KiB; a tail under 7 bytes is padding
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7]) if left >= 7 else (0, 0)
        if kind == 0:
            pos += left
            continue
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def _summary(records: list) -> dict:
    """The run's summary: its summary updates applied in order (top-level keys)."""
    summary: dict = {}
    for record in records:
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                key = item.key or item.nested_key[0]
                if item.key or len(item.nested_key) == 1:
                    summary[key] = json.loads(item.value_json)
            for item in record.summary.remove:
                summary.pop(item.key or item.nested_key[0], None)
    return summary


def test_wandb_offline_summary_is_the_last_value_of_each_metric(store, tmp_path, monkeypatch):
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")  # never the network
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = _config(tmp_path, "wandb=true")
    run_dir = tmp_path / "tracked"
    assert train(cfg, store.path, run_dir)["finished"]

    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    (log,) = offline.glob("run-*.wandb")
    records = _wandb_records(log)
    (header,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (header.project, header.display_name) == ("brainencoder", "tracked")
    config = {u.key: json.loads(u.value_json) for u in header.config.update}
    assert config["wandb"] is True and config["lr"] == cfg.lr

    last = {tag: pairs[-1][1] for tag, pairs in _expected(run_dir).items()}
    assert {"train/loss", "val/r2_median", "best"} <= set(last)
    summary = _summary(records)
    logged = {k: v for k, v in summary.items() if not k.startswith("_")}
    assert sorted(logged) == sorted(last)
    for tag, value in last.items():
        assert logged[tag] == pytest.approx(value, rel=RTOL, abs=ATOL), tag
    assert summary["_step"] == Run(run_dir).read_metrics()[-1]["step"]
    written = offline / "files" / "wandb-summary.json"  # written offline by some wandb versions
    if written.exists():
        on_disk = json.loads(written.read_text())
        assert {k: on_disk[k] for k in last} == pytest.approx(last, rel=RTOL, abs=ATOL)


@pytest.mark.parametrize("key", ["tensorboard", "wandb"])
def test_a_missing_tracker_package_is_a_one_line_error_naming_the_extra(
    store, tmp_path, monkeypatch, key
):
    monkeypatch.setitem(sys.modules, key, None)  # import fails as if not installed
    message = rf"^'{key}: true' needs the {key} package: pip install 'brainencoder\[{key}\]'$"
    with pytest.raises(ConfigError, match=message) as error:
        train(_config(tmp_path, f"{key}=true"), store.path, tmp_path / "run")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "run").exists()  # before any work
