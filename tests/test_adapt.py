"""adapt: a new subject fitted to a trained group model; the others untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainencoder.cli.main import main
from brainencoder.data.prepare import PrepareOptions, prepare_store
from brainencoder.data.synthetic import SyntheticConfig, make_synthetic
from brainencoder.experiments.adapt import AdaptConfig, Overwrite, adapt
from brainencoder.models.readouts.personal import PersonalAffine
from brainencoder.runs.load import load_model
from brainencoder.training.config import load_config
from brainencoder.training.loop import train
from brainencoder.util.errors import BrainEncoderError, ConfigError, DataError
from conftest import FAST_TRAIN

GROUP = ["subj01", "subj02", "subj03"]
FAST = FAST_TRAIN
QUICK = AdaptConfig(epochs=5, pulls=[0.1, 1.0])  # two pulls: the choice is exercised


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    """Data with a held-out subj04, the group store (subj01-03) and a trained group run."""
    root = tmp_path_factory.mktemp("adapt")
    cfg = SyntheticConfig(
        n_subjects=3, held_out=1, n_train=80, n_test=12, n_vertices=150, image_size=48
    )
    data = make_synthetic(root / "data", cfg)
    store = prepare_store(
        data, root / "store", PrepareOptions(image_size=32), subjects=GROUP, progress=False
    )
    train(load_config(None, FAST), store.path, root / "run")
    return data, store, root / "run"


def test_held_out_subject_has_its_own_vertices(group):
    data, store, _ = group
    held = prepare_store(
        data,
        data.parent / "held",
        PrepareOptions(image_size=32),
        subjects=["subj04"],
        progress=False,
    )
    mine = held.space.fsaverage_masks("subj04")
    union = {h: np.zeros_like(m) for h, m in mine.items()}
    for name in GROUP:
        for h, m in store.space.fsaverage_masks(name).items():
            union[h] |= m
    assert all((mine[h] & ~union[h]).any() for h in mine)  # vertices no group subject has
    assert all((union[h] & ~mine[h]).any() for h in mine)  # and it lacks some of theirs


def test_adapt_fits_the_new_subject_and_leaves_the_others_bit_identical(group, tmp_path):
    data, store, run = group
    summary = adapt(run, data, "subj04", tmp_path / "ad", n_images=40, config=QUICK)
    assert summary["finished"] and summary["added_vertices"] > 0
    assert summary["n_train_images"] + summary["n_val_images"] == 40
    before, after = load_model(run), load_model(tmp_path / "ad")
    images = np.asarray(store.images[:6])
    for name in GROUP:
        a, b = before.predict(images, name), after.predict(images, name)
        for h in ("lh", "rh"):
            np.testing.assert_array_equal(a[h], b[h])
    trained = {n: p.clone() for n, p in before.state_dict().items()}
    for key, value in after.state_dict().items():
        if key in trained and "per_subject.subj04" not in key and "embedding" not in key:
            assert value.shape == trained[key].shape and bool((value == trained[key]).all()), key
    new = after.predict(images, "subj04")
    n_lh = after.space.n_subject_vertices("subj04", "lh")
    assert new["lh"].shape == (6, n_lh) and np.isfinite(new["rh"]).all()
    # the whole toolchain takes the adapted run
    assert (
        main(
            [
                "evaluate",
                str(tmp_path / "ad"),
                "--split",
                "test",
                "--noise-ceiling",
                str(data / "truth"),
            ]
        )
        == 0
    )
    assert (
        main(
            ["submit", str(tmp_path / "ad"), "--data", str(data), "--out", str(tmp_path / "s.zip")]
        )
        == 0
    )
    assert main(["plot", str(tmp_path / "ad"), "--split", "test"]) == 0
    assert main(["report", str(tmp_path / "ad")]) == 0
    images = str(data / "subj04" / "test_split" / "test_images")
    out = str(tmp_path / "p.npz")
    assert main(["predict", str(tmp_path / "ad"), images, "--subject", "subj04", "--out", out]) == 0


def test_adapt_errors_a_user_will_hit(group, tmp_path, capsys):
    data, _store, run = group
    with pytest.raises(ConfigError, match="already has a subject 'subj01'; .*--overwrite-subject"):
        adapt(run, data, "subj01", tmp_path / "a1", config=QUICK)
    with pytest.raises(DataError, match=r"no subj09 \(subjects found: subj01, subj02"):
        adapt(run, data, "subj09", tmp_path / "a2", config=QUICK)
    with pytest.raises(ConfigError, match="--n-images 5000 is more than the .* images of subj04"):
        adapt(run, data, "subj04", tmp_path / "a3", n_images=5000, config=QUICK)
    other = prepare_store(
        data, tmp_path / "s48", PrepareOptions(image_size=48), subjects=["subj04"], progress=False
    )
    with pytest.raises(
        DataError, match="stored at 48 px, but the run was trained on a store at 32"
    ):
        adapt(run, other.path, "subj04", tmp_path / "a4", config=QUICK)
    assert (
        main(
            [
                "adapt",
                str(run),
                "--data",
                str(data),
                "--subject",
                "subj04",
                "--out",
                str(tmp_path / "a5"),
                "--n-images",
                "30",
                "epochs=2",
            ]
        )
        == 0
    )
    with pytest.raises(BrainEncoderError, match="already holds a run; pass --overwrite"):
        adapt(run, data, "subj04", tmp_path / "a5", n_images=30, config=QUICK)


def test_overwrite_subject_refits_only_that_subject(group, tmp_path):
    _data, store, run = group
    adapt(
        run,
        store.path,
        "subj02",
        tmp_path / "re",
        n_images=30,
        config=QUICK,
        overwrite=Overwrite(subject=True),
    )
    before, after = load_model(run), load_model(tmp_path / "re")
    images = np.asarray(store.images[:4])
    for name in ("subj01", "subj03"):  # the others: bit-identical
        for h in ("lh", "rh"):
            np.testing.assert_array_equal(
                before.predict(images, name)[h], after.predict(images, name)[h]
            )
    # subj02 is refitted: its own parameters are new, everything shared is the old model's
    old, new = before.state_dict(), after.state_dict()
    mine = [k for k in new if "per_subject.subj02." in k]
    assert mine and any(not torch.equal(old[k], new[k]) for k in mine)
    shared = [k for k in new if "per_subject." not in k]
    assert all(torch.equal(old[k], new[k]) for k in shared)
    assert after.subjects == ["subj01", "subj03", "subj02"]  # the refitted subject comes last


READOUTS = {
    "grouplin_seq": FAST,
    "grouplin": [*FAST, "model.readout.name=grouplin", "model.readout.dropout=0.1"],
    "point": [
        *[a for a in FAST if "_dim" not in a],
        "model.readout.name=point",
        "model.readout.channels=8",
    ],
    "roi_query": [
        *[a for a in FAST if "_dim" not in a],
        "model.readout.name=roi_query",
        "model.readout.dim=16",
    ],
}


@pytest.mark.parametrize("readout", sorted(READOUTS))
def test_every_readout_adapts_and_leaves_the_others_bit_identical(group, readout, tmp_path):
    data, store, _ = group
    run = tmp_path / "group"
    cfg = load_config(None, [*READOUTS[readout], f"cache_dir={tmp_path / 'cache'}"])
    train(cfg, store.path, run)
    summary = adapt(run, data, "subj04", tmp_path / "ad", n_images=40, config=QUICK)
    assert summary["added_vertices"] > 0 and np.isfinite(summary["val/pearson_median"])
    before, after = load_model(run), load_model(tmp_path / "ad")
    assert after.config.readout["name"] == readout and after.subjects == [*GROUP, "subj04"]
    images = np.asarray(store.images[:6])
    for name in GROUP:
        a, b = before.predict(images, name), after.predict(images, name)
        for h in ("lh", "rh"):
            np.testing.assert_array_equal(a[h], b[h])
    new = after.predict(images, "subj04")
    n_lh = after.space.n_subject_vertices("subj04", "lh")
    assert new["lh"].shape == (6, n_lh) and np.isfinite(new["rh"]).all()
    # per-vertex tensors grew by the added vertices; the old vertices' rows are unchanged
    columns = before.space.subject_columns("subj01")
    moved = after.space.subject_columns("subj01")
    grown = 0
    for name, axis in after.readout.vertex_axes.items():
        old, now = getattr(before.readout, name), getattr(after.readout, name)
        if old.shape[axis] == 0:  # an optional stage that is off
            assert now.shape == old.shape, name
            grown += 1
            continue
        assert now.shape[axis] == after.space.n_vertices, name
        old_rows = torch.index_select(old, axis, torch.from_numpy(columns))
        assert torch.equal(old_rows, torch.index_select(now, axis, torch.from_numpy(moved))), name
        grown += 1
    assert grown == len(after.readout.vertex_axes)
    # the subject's own tuning moved from the group's, at its own vertices only
    module = after.readout.per_subject["subj04"]
    assert summary["pull"] in QUICK.pulls and set(summary["pull_scores"]) == {
        f"{p:g}" for p in QUICK.pulls
    }
    if readout in ("point", "roi_query"):
        assert isinstance(module, PersonalAffine) and module.tuned
        assert after.config.readout["personal_subjects"] == ["subj04"]
        mine = torch.from_numpy(after.space.subject_columns("subj04"))
        elsewhere = torch.ones(after.space.n_vertices, dtype=torch.bool)
        elsewhere[mine] = False
        for name in module.tuned:
            residual, axis = module.residual(name).detach(), after.readout.vertex_axes[name]
            assert residual.index_select(axis, mine).abs().sum() > 0, name
            outside = residual.index_select(axis, elsewhere.nonzero().squeeze(1))
            assert torch.equal(outside, torch.zeros_like(outside)), name
    else:  # the group-PCA readouts: the subject's own map moved from the average's
        start = torch.stack([before.readout.per_subject[s].weight for s in GROUP]).float().mean(0)
        assert not torch.equal(module.weight.detach(), start)
    # the adapted run is a run like any other
    again = load_model(tmp_path / "ad")
    np.testing.assert_array_equal(again.predict(images, "subj04")["lh"], new["lh"])


def test_adapted_run_scores_every_subject_on_its_own_store(group, tmp_path):
    """A store that also holds the group's subjects (other splits) is used only for the new one."""
    from brainencoder.evaluation.evaluate import evaluate_run
    from brainencoder.util.errors import CheckpointError

    data, store, run = group
    both = prepare_store(
        data,
        tmp_path / "both",
        PrepareOptions(image_size=32),
        subjects=[*GROUP, "subj04"],
        progress=False,
    )
    adapt(run, both.path, "subj04", tmp_path / "ad", n_images=30, config=QUICK)
    before = evaluate_run(run, "val", out_dir=tmp_path / "e1")
    after = evaluate_run(tmp_path / "ad", "val", out_dir=tmp_path / "e2")
    assert set(after.subject) == {*GROUP, "subj04", "all"}
    for name in GROUP:  # the old subjects: their own store and splits, the same numbers
        a = before[before.subject == name].reset_index(drop=True)
        b = after[after.subject == name].reset_index(drop=True)
        assert a.equals(b), name
    # naming a store selects the subjects recorded for it; another store is refused
    only_new = evaluate_run(tmp_path / "ad", "val", store=both, out_dir=tmp_path / "e3")
    assert set(only_new.subject) == {"subj04", "all"}
    only_old = evaluate_run(tmp_path / "ad", "val", store=store, out_dir=tmp_path / "e4")
    assert set(only_old.subject) == {*GROUP, "all"}
    other = prepare_store(
        data,
        tmp_path / "other",
        PrepareOptions(image_size=32, split_seed=5),
        subjects=GROUP,
        progress=False,
    )
    with pytest.raises(CheckpointError, match=r"is not the store .* \(other splits\)"):
        evaluate_run(tmp_path / "ad", "val", store=other, out_dir=tmp_path / "e5")


def test_a_failed_adapt_leaves_no_folder_and_the_rerun_works(group, tmp_path, capsys):
    """A failure inside the run being built (after a store was prepared in it), or a seed
    refused up front: one-line errors, nothing left behind, and the corrected command
    then writes the same --out (no stray folder or ownership marker blocks it)."""
    data, _store, run = group
    out = tmp_path / "runs" / "ad"
    base = ["adapt", str(run), "--data", str(data), "--subject", "subj04", "--out", str(out)]
    for bad, match in [
        (["--n-images", "5000"], "--n-images 5000 is more than the"),
        (["--seed", "18446744073709551616"], r"'seed' must be in [0, 4294967295]"),
    ]:
        assert main([*base, *bad, "epochs=2"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and match in err, err
        assert not out.parent.exists() or not list(out.parent.iterdir())
    assert main([*base, "--n-images", "30", "epochs=2"]) == 0
    assert (out / "best.safetensors").is_file() and (out / "summary.json").is_file()
    assert [p.name for p in out.parent.iterdir()] == ["ad"]
