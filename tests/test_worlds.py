"""Planted worlds of the synthetic generator, its per-subject knobs and the planted-truth oracle."""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np
import pytest
from PIL import Image

from brainencoder.cli.main import main
from brainencoder.data.synthetic import SyntheticConfig, make_synthetic
from brainencoder.data.synthetic_oracle import planted_signal, read_config
from brainencoder.data.synthetic_plant import build_state
from brainencoder.data.synthetic_worlds import WORLDS
from brainencoder.util.errors import BrainEncoderError
from conftest import SMALL

TINY = dict(n_subjects=2, n_train=40, n_test=6, n_vertices=60, image_size=32, seed=2)


def _signal(root, subject="subj01"):
    return np.concatenate(
        [np.load(root / "truth" / subject / f"{h}_test_signal.npy") for h in ("lh", "rh")], 1
    )


def _digest(root) -> str:
    """sha256 of every data and truth file but the config and the features (new files)."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name not in (
            "synthetic.json",
            "features.npy",
            "features_nsd.npy",
        ):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    base = tmp_path_factory.mktemp("worlds")
    return {w: make_synthetic(base / w, SyntheticConfig(**TINY, world=w)) for w in WORLDS.names()}


def test_at_least_five_worlds_are_registered():
    assert {"retino", "edges", "colour", "shapes", "subjects"} <= set(WORLDS.names())


def test_every_world_generates_its_truth_and_features(worlds):
    for name, root in worlds.items():
        saved = json.loads((root / "truth" / "synthetic.json").read_text())
        assert saved["world"] == name
        feats = np.load(root / "truth" / "features.npy")
        nsd = np.load(root / "truth" / "features_nsd.npy")
        assert feats.ndim == 4 and feats.shape[0] == nsd.size and np.isfinite(feats).all()
        assert feats.shape[1] == WORLDS.get(name).n_features
        signal = _signal(root)
        # standardized per vertex over the subject's images, of which the test ones are a part
        assert np.isfinite(signal).all() and 0.3 < signal.std() < 2.0


def test_worlds_differ_from_each_other(worlds):
    """Same seed, same image ids: the planted test signals are different functions of the images."""
    names = WORLDS.names()
    signals = {w: _signal(worlds[w]) for w in names}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert signals[a].shape == signals[b].shape
            r = np.corrcoef(signals[a].ravel(), signals[b].ravel())[0, 1]
            assert r < 0.9, (a, b, r)  # the same world would correlate 1.0


def test_default_world_is_byte_identical_to_the_knobs_at_zero(tmp_path, synth_root):
    explicit = SyntheticConfig(
        **{
            **SMALL.__dict__,
            "world": "retino",
            "subject_rf_shift": 0.0,
            "subject_tuning_jitter": 0.0,
        }
    )
    again = make_synthetic(tmp_path / "again", explicit)
    assert _digest(again) == _digest(synth_root)


def test_default_dataset_is_the_same_as_before_the_worlds(synth_root):
    # sha256 of the default test dataset (conftest.SMALL) as the generator wrote it before the
    # planted worlds existed (commit of 2026-12-07): any change of a draw shows here
    with_knobs = read_config(synth_root)
    assert with_knobs.world == "retino" and with_knobs.subject_rf_shift == 0.0
    assert _digest(synth_root) == (
        "924807096d7fe03e8b84fe28101d5ccff970d46084315608fa7b437cabcf341b"
    )


def _tuning_gap(config: SyntheticConfig) -> tuple[float, float]:
    """Mean |centre| and |preference| difference between subj01 and subj02's planted tuning."""
    from brainencoder.data.synthetic_plant import plant_hemi

    state = build_state(config)
    a = plant_hemi(state, 0, "lh", np.random.default_rng([config.seed, 0]))
    b = plant_hemi(state, 1, "lh", np.random.default_rng([config.seed, 1]))
    centres = np.abs(a.tuning.centers - b.tuning.centers).mean()
    return float(centres), float(np.abs(a.tuning.pref - b.tuning.pref).mean())


def test_knobs_make_subjects_differ_per_vertex_smoothly():
    base = SyntheticConfig(**TINY)
    shifted = SyntheticConfig(**TINY, subject_rf_shift=0.08)
    jittered = SyntheticConfig(**TINY, subject_tuning_jitter=0.8)
    c0, p0 = _tuning_gap(base)
    c1, p1 = _tuning_gap(shifted)
    c2, p2 = _tuning_gap(jittered)
    assert p0 == 0 and p1 == 0  # without jitter subjects share the group's preferences
    assert c1 > 2 * c0 and p2 > 0.2  # the knobs add what they name, nothing else
    assert c2 == pytest.approx(c0, abs=1e-12)
    # smooth over the cortex: neighbouring vertices shift alike (the group's own jitter does not)
    from brainencoder.data.synthetic_plant import plant_hemi

    state = build_state(shifted)
    d = plant_hemi(state, 0, "lh", np.random.default_rng([2, 0])).tuning.centers
    d = d - state.tunings["lh"].centers
    uv = state.cortices["lh"].uv
    near = np.argsort(np.linalg.norm(uv[:, None] - uv[None], axis=-1), axis=1)[:, 1]
    assert np.corrcoef(d[:, 0], d[near, 0])[0, 1] > 0.5


def test_subjects_world_uses_its_presets():
    c, p = _tuning_gap(SyntheticConfig(**TINY, world="subjects"))
    assert p > 0.2 and c > 0.03


def test_unknown_world_is_one_line_listing_the_names(tmp_path, capsys):
    with pytest.raises(
        BrainEncoderError, match=r"unknown synthetic world 'nope'; choose one of .*retino"
    ):
        make_synthetic(tmp_path / "x", SyntheticConfig(**TINY, world="nope"))
    assert not (tmp_path / "x").exists()
    assert main(["synth", str(tmp_path / "y"), "--world", "nope"]) == 1
    err = capsys.readouterr().err.strip()
    assert "unknown synthetic world 'nope'" in err and "shapes" in err and "\n" not in err


def test_synth_command_records_the_world(tmp_path):
    out = tmp_path / "d"
    args = ["synth", str(out), "--world", "edges", "--vertices", "40", "--n-train", "40"]
    assert main([*args, "--n-test", "5", "--image-size", "32"]) == 0
    assert json.loads((out / "truth" / "synthetic.json").read_text())["world"] == "edges"


def _test_pngs(root, subject):
    files = sorted((root / subject / "test_split" / "test_images").glob("*.png"))
    return np.stack(
        [np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255 for f in files]
    )


def test_oracle_is_exact_on_the_generators_own_pixels(worlds):
    for name, root in worlds.items():
        state = build_state(read_config(root))
        by_nsd = state.by_nsd
        ids = state.assignments[1][1].tolist()
        images = np.stack([state.images[by_nsd[i]] for i in ids])
        # the same float computation as the writer's, rounded to float32 as the files are
        assert np.array_equal(planted_signal(images, root, "subj02"), _signal(root, "subj02")), name


@pytest.mark.parametrize("world", sorted(WORLDS.names()))
def test_oracle_reproduces_test_signal_from_the_pngs(tmp_path, world):
    """From the PNGs: uint8 quantization (and a resize when the PNG is not 64 px) only.

    Tolerance: per-vertex Pearson r between the oracle and test_signal over the
    test images, mean > 0.97, and mean |difference| < 0.15 (signals have sd 1):
    quantizing a smooth colour gradient to 8 bits changes the smallest gradient
    energies that retino's square-root features amplify.
    """
    config = SyntheticConfig(**{**TINY, "image_size": 64, "n_test": 30}, world=world)
    root = make_synthetic(tmp_path / "d", config)
    pred = planted_signal(_test_pngs(root, "subj02"), root, "subj02")
    truth = _signal(root, "subj02")
    assert pred.shape == truth.shape
    r = [np.corrcoef(pred[:, v], truth[:, v])[0, 1] for v in range(truth.shape[1])]
    assert np.mean(r) > 0.97 and np.abs(pred - truth).mean() < 0.15


def test_oracle_resizes_any_image_size(worlds):
    root = worlds["edges"]
    pngs = _test_pngs(root, "subj01")  # 32 px
    pred = planted_signal(pngs, root, "subj01")
    r = np.corrcoef(pred.ravel(), _signal(root).ravel())[0, 1]
    assert pred.shape == _signal(root).shape and r > 0.8  # 64 -> 32 -> 64 px loses detail


def test_oracle_refuses_bad_input(worlds, tmp_path):
    root = worlds["retino"]
    with pytest.raises(BrainEncoderError, match="not a subject"):
        planted_signal(np.zeros((1, 8, 8, 3)), root, "subj09")
    with pytest.raises(BrainEncoderError, match=r"shape \(n, H, W, 3\)"):
        planted_signal(np.zeros((8, 8, 3)), root, "subj01")
    with pytest.raises(BrainEncoderError, match="synthetic.json"):
        planted_signal(np.zeros((1, 8, 8, 3)), tmp_path, "subj01")


def test_leave_one_world_out_chooses_on_the_other_worlds(monkeypatch):
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(root))
    spec = importlib.util.spec_from_file_location("bench_worlds", root / "worlds.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_worlds", module)  # dataclasses look it up there
    spec.loader.exec_module(module)
    rows = {  # a is best on x and y, b on z; a is best on the mean of any two
        "a": {"x": [50.0], "y": [50.0], "z": [40.0]},
        "b": {"x": [30.0], "y": [30.0], "z": [45.0]},
    }
    view = {v["world"]: v for v in module.leave_one_world_out(rows, ["x", "y", "z"])}
    assert view["z"]["chosen"] == "a" and view["z"]["score"] == 40.0
    assert view["z"]["best"] == "b" and view["z"]["best_score"] == 45.0
    assert view["x"]["chosen"] == "a" and view["x"]["score"] == 50.0
    assert module.world_means(rows["a"], ["x", "y", "z"])["mean"] == pytest.approx(140 / 3)
