"""Guarantees the docs state that had no test of their own.

- a metrics record that fails to write (a full disk) leaves nothing half-written
  (troubleshooting: "files are written atomically, so nothing half-written was left");
- ``--resume`` accepts the trackers switched on or off, and the result is the same
  (workflow: "Trackers do not change the result");
- ``adapt`` starts the new subject at the average of the existing subjects'
  parameters (experiments: "starting from the average of the existing subjects'");
- ``compare``'s "all" score is the submission's challenge score (experiments).
"""

from __future__ import annotations

import errno
import json

import numpy as np
import pandas as pd
import pytest
import torch

from brainencoder.cli.main import main
from brainencoder.training.config import load_config
from brainencoder.training.loop import train
from conftest import TINY_TRAIN

# --------------------------------------------------------------------------- metrics.jsonl


def test_a_failed_metrics_write_leaves_no_half_line(tmp_path, monkeypatch):
    """The disk fills in the middle of a record: the error propagates, the file is as it was."""
    from brainencoder.runs import metrics_log

    path = tmp_path / "metrics.jsonl"
    metrics_log.append(path, {"step": 1, "train/loss": 0.5})
    before = path.read_bytes()
    real_write = metrics_log.os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(metrics_log.os, "write", half_then_full)
    with pytest.raises(OSError) as info:
        metrics_log.append(path, {"step": 2, "train/loss": 0.25, "note": "x" * 100})
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert path.read_bytes() == before  # the half record was cut back
    metrics_log.append(path, {"step": 2, "train/loss": 0.25})
    assert [r["step"] for r in metrics_log.read(path)] == [1, 2]


# --------------------------------------------------------------------------- resume and trackers


@pytest.mark.parametrize(("first", "then"), [("false", "true"), ("true", "false")])
def test_resume_accepts_trackers_switched_on_or_off(store, tmp_path, first, then):
    """Stopped with TensorBoard ``first``, resumed with it ``then``: the weights of the
    uninterrupted run, bitwise (CPU, float32, no dropout: the steps are pure functions of
    (seed, epoch, step)), and ``metrics.jsonl`` the same records."""
    pytest.importorskip("tensorboard")
    from safetensors.torch import load_file

    base = [*TINY_TRAIN, "epochs=2", "log_every=1", f"cache_dir={tmp_path / 'cache'}"]
    train(load_config(None, base), store.path, tmp_path / "whole")
    stopped = train(
        load_config(None, [*base, f"tensorboard={first}"]),
        store.path,
        tmp_path / "resumed",
        stop_after_steps=3,
    )
    assert stopped == {"stopped_at_step": 3}
    summary = train(
        load_config(None, [*base, f"tensorboard={then}"]), store.path, tmp_path / "resumed", True
    )
    assert summary["finished"]
    whole = load_file(tmp_path / "whole" / "best.safetensors")
    resumed = load_file(tmp_path / "resumed" / "best.safetensors")
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key

    def losses(run):
        lines = (run / "metrics.jsonl").read_text().splitlines()
        records = [json.loads(x) for x in lines]
        return [(r["step"], r["train/loss"]) for r in records if "train/loss" in r]

    assert losses(tmp_path / "whole") == losses(tmp_path / "resumed")
    assert (tmp_path / "resumed" / "tensorboard").exists() == (then == "true" or first == "true")


# --------------------------------------------------------------------------- adapt


@pytest.mark.parametrize("readout", ["grouplin", "grouplin_seq", "point", "roi_query"])
def test_a_new_subject_starts_at_the_average_subject(store, readout):
    """adapt's default (``init: average``) adds the subject as the mean of the others'
    parameters, for every readout (exact: a mean of float32 tensors, computed once)."""
    from brainencoder.core.regions import RegionLabels
    from brainencoder.experiments.adapt import AdaptConfig
    from brainencoder.models.encoder import create_encoder

    assert AdaptConfig().init == "average"
    torch.manual_seed(0)
    options = {"grouplin": {"latent_dim": 4}, "grouplin_seq": {"hidden_dim": 8, "latent_dim": 4}}
    regions = RegionLabels(np.arange(store.space.n_vertices) % 3, ["A", "B"])  # roi_query's
    readout_options = {"name": readout, **options.get(readout, {})}
    model = create_encoder(
        "tiny", store.space, regions=regions, img_size=32, readout=readout_options
    )
    others = list(model.subjects)
    for name in others:  # make the subjects differ, so that a mean is not any one of them
        for tensor in model.readout.per_subject[name].state_dict().values():
            tensor.add_(torch.randn_like(tensor.float()).to(tensor.dtype))
    states = [
        {k: v.clone() for k, v in model.readout.per_subject[s].state_dict().items()} for s in others
    ]
    model.add_subject("subj09", store.space.fsaverage_masks("subj01"), like=others)
    new = model.readout.per_subject["subj09"].state_dict()
    assert new.keys() == states[0].keys() and new
    for key, value in new.items():
        mean = torch.stack([s[key].float() for s in states]).mean(0)
        torch.testing.assert_close(value.float(), mean, rtol=0, atol=0)
        assert not torch.equal(value, states[0][key])


# --------------------------------------------------------------------------- compare and score


def test_compare_all_is_the_submission_challenge_score(store, synth_root, tmp_path):
    """compare's "all" score weighs every vertex of every subject equally, as the
    leaderboard does: it equals ``score`` of the run's submission zip. Tolerance 1e-3
    points: compare predicts the store's images, submit decodes the test files; both
    resize to the store's size the same way, so only float32 summation order differs."""
    from brainencoder.data.layout import read_layout
    from brainencoder.evaluation.submission import score_submission

    overrides = [*TINY_TRAIN, f"cache_dir={tmp_path / 'cache'}"]
    for seed in (0, 1):
        train(load_config(None, [*overrides, f"seed={seed}"]), store.path, tmp_path / f"r{seed}")
    truth = synth_root / "truth"
    argv = ["compare", str(tmp_path / "r0"), str(tmp_path / "r1"), "--split", "test"]
    argv += ["--noise-ceiling", str(truth), "--out", str(tmp_path / "cmp"), "--n-boot", "10"]
    assert main(argv) == 0
    table = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    layout = read_layout(synth_root, store.names)
    for run in ("r0", "r1"):
        zip_path = tmp_path / f"{run}.zip"
        assert (
            main(["submit", str(tmp_path / run), "--data", str(synth_root), "--out", str(zip_path)])
            == 0
        )
        score = score_submission(zip_path, truth, layout)["all"]
        row = table[(table.run == run) & (table.subject == "all") & (table.roi == "all")]
        value = float(row[row.metric == "score"].value.iloc[0])
        np.testing.assert_allclose(value, score, rtol=0, atol=1e-3)


@pytest.mark.parametrize("readout", ["grouplin", "grouplin_seq"])
def test_pca_readouts_fit_added_vertices_by_a_cross_validated_ridge(store, readout):
    """A new subject's vertices outside the group space: the PCA readouts map its latent
    to them by ridge (alpha by 5-fold CV). With responses that are an exact linear map of
    the latent plus 1% noise, the fitted vertices predict new images' planted responses
    (r > 0.99 per vertex), and the chosen alpha is the small one, not the large."""
    from brainencoder.models.encoder import create_encoder

    torch.manual_seed(0)
    options = {"grouplin": {"latent_dim": 4}, "grouplin_seq": {"hidden_dim": 8, "latent_dim": 4}}
    model = create_encoder(
        "tiny", store.space, img_size=32, readout={"name": readout, **options[readout]}
    )
    masks = {h: m.copy() for h, m in store.space.fsaverage_masks("subj01").items()}
    union = np.zeros_like(masks["lh"])
    for name in store.names:
        union |= store.space.fsaverage_masks(name)["lh"]
    new = np.flatnonzero(~union)[:6]
    masks["lh"][new] = True
    with torch.no_grad():  # as after training (grouplin_seq's shared layer starts at zero)
        for tensor in model.readout.shared.parameters():
            tensor.normal_()
    for name in store.names:
        for tensor in model.readout.per_subject[name].state_dict().values():
            tensor.add_(torch.randn_like(tensor.float()).to(tensor.dtype))
    added = model.add_subject("subj09", masks, like=list(store.names))
    assert added.numel() == new.size
    readout = model.readout.eval()
    index = readout.subjects.index("subj09")

    def latent(features):
        with torch.no_grad():
            subj = torch.full((features[0].shape[0],), index, dtype=torch.long)
            return readout.latent(readout.hidden(features), subj).double()

    def images(n, seed):
        g = torch.Generator().manual_seed(seed)
        return [torch.randn(n, *shape, generator=g) for shape in readout.feature_shapes]

    g = torch.Generator().manual_seed(1)
    weight = torch.randn(latent(images(2, 0)).shape[1], new.size, generator=g, dtype=torch.float64)
    bias = torch.randn(new.size, generator=g, dtype=torch.float64)

    def planted(features):
        return latent(features) @ weight + bias

    train_features = images(200, 2)
    clean = planted(train_features)
    target = clean + 0.01 * clean.std() * torch.randn(clean.shape, generator=g, dtype=torch.float64)
    fitted = readout.finish_adaptation("subj09", train_features, target.float(), added, [1e-3, 1e6])
    assert fitted == new.size
    test_features = images(100, 3)
    with torch.no_grad():
        subj = torch.full((100,), index, dtype=torch.long)
        predicted = readout(test_features, subj)[:, added].double()
    truth = planted(test_features)
    for v in range(new.size):
        r = np.corrcoef(predicted[:, v].numpy(), truth[:, v].numpy())[0, 1]
        assert r > 0.99, (v, r)
    scale = float(truth.std())
    torch.testing.assert_close(predicted, truth, rtol=0, atol=0.1 * scale)  # alpha 1e6: ~0
