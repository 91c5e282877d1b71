"""Benchmark scripts that must stay runnable, in their reduced (CPU) modes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_gpu_check_runs_end_to_end_in_reduced_mode(capsys):
    rows = _load("gpu_check").main(["--reduced"])
    modes = [r["mode"] for r in rows]
    assert modes == ["from images", "from cache", "phase 2", "phase 2 LoRA"]
    assert all(r["samples_per_s"] > 0 and r["amp"] == "bf16" for r in rows)
    out = capsys.readouterr().out
    assert "| phase 2 LoRA | bf16 |" in out and "CPU: 2 subjects, 600 vertices" in out


def test_gpu_check_full_mode_needs_cuda(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the full check would run")
    with pytest.raises(SystemExit):
        _load("gpu_check").main([])
    assert "no CUDA device; run with --reduced" in capsys.readouterr().err


def test_data_wait_runs_in_reduced_mode(capsys):
    rows = _load("data_wait").main(["--reduced"])
    assert [r["workers"] for r in rows] == [0, 2]
    assert all(r["steps"] > 0 and 0 <= r["wait_s"] <= r["train_s"] for r in rows)
    out = capsys.readouterr().out
    assert "| num_workers | training s | waiting for data s |" in out and "data-wait share" in out


def test_recipes_runs_in_reduced_mode(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # the recipes read configs/demo.yaml
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    only = [
        "grouplin_seq (the old demo's)",
        "  14x14, softplus + shared rank 8",
        "  the same, ensemble of 3 seeds",
    ]
    result = _load("recipes").main(["--reduced", "--only", *only])
    assert set(result["scores"]) == set(only)
    assert all(len(v) == 1 and 0 < result["steps"][k] for k, v in result["scores"].items())
    assert "step / grouplin_seq" in capsys.readouterr().out
