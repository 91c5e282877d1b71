"""adapt's images: a seeded N, exactly the listed ones (--images), or none (zero-shot)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import brainencoder as be
from brainencoder.cli.main import main
from brainencoder.experiments import adapt as adapt_module
from brainencoder.experiments.adapt import AdaptConfig, Overwrite, adapt
from brainencoder.experiments.adapt_images import (
    choose_rows,
    listed_rows,
    read_image_list,
    train_split_names,
)
from brainencoder.runs.load import load_model
from brainencoder.training.config import load_config
from brainencoder.training.loop import train
from brainencoder.util.errors import ConfigError, DataError
from conftest import TINY_TRAIN


@pytest.fixture(scope="module")
def group_run(store, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapt_images")
    train(load_config(None, [*TINY_TRAIN, f"cache_dir={root / 'cache'}"]), store.path, root / "run")
    return root / "run"


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_listed_names_are_the_train_split_rows(store, tmp_path):
    names = train_split_names(store, "subj01")
    rows = listed_rows(store, "subj01", list(enumerate(names, 1)), "list")
    np.testing.assert_array_equal(rows, np.sort(store.split_rows("subj01", "train")))
    # blank lines, comments and folders in front of a name are ignored
    listed = _write(tmp_path / "l.txt", ["# planned", "", f"a/b/{names[3]}  # why", names[0]])
    assert read_image_list(listed) == [(3, names[3]), (4, names[0])]


def test_a_bad_list_is_one_line_naming_the_file_and_line(store, tmp_path):
    names = train_split_names(store, "subj01")
    info = store.subject("subj01")
    val_row = int(store.split_rows("subj01", "val")[0])
    val_name = f"train-{val_row + 1:04d}_nsd-{int(store.nsd_ids[info.train_rows[val_row]]):05d}.png"
    wrong_id = names[0].split("_nsd-")[0] + "_nsd-99999.png"
    cases = [
        (
            [*names[:12], wrong_id],
            r"l\.txt: line 13: 'train-.*_nsd-99999\.png' is not one of subj01",
        ),
        ([*names[:12], "cat.png"], r"l\.txt: line 13: 'cat\.png' is not one of subj01's training"),
        ([*names[:12], names[2]], r"l\.txt: line 13: .* is listed twice \(also line 3\)"),
        ([*names[:12], val_name], r"l\.txt: line 13: .* is in subj01's val or test-val split"),
    ]
    for lines, match in cases:
        entries = read_image_list(_write(tmp_path / "l.txt", lines))
        with pytest.raises(DataError, match=match) as info_:
            listed_rows(store, "subj01", entries, str(tmp_path / "l.txt"))
        assert "\n" not in str(info_.value)
    with pytest.raises(
        ConfigError, match=r"lists 3 images; adapt needs at least 10 .*--n-images 0"
    ):
        listed_rows(store, "subj01", list(enumerate(names[:3], 1)), "images=")
    with pytest.raises(DataError, match=r"missing\.txt: cannot read the image list"):
        read_image_list(tmp_path / "missing.txt")


def test_n_images_zero_is_no_image_and_a_few_are_refused(store):
    train_rows, val_rows = choose_rows(store, "subj01", 0, 0, 0.15)
    assert train_rows.size == 0 and val_rows.size == 0
    with pytest.raises(ConfigError, match=r"--n-images must be 0 \(zero-shot\) or at least 10"):
        choose_rows(store, "subj01", 5, 0, 0.15)


def test_adapt_trains_on_exactly_the_listed_images(store, group_run, tmp_path, monkeypatch):
    seen = []
    real = adapt_module.fit_subject

    def spy(model, store_, subject, rows, *args):
        seen.append(rows)
        return real(model, store_, subject, rows, *args)

    monkeypatch.setattr(adapt_module, "fit_subject", spy)
    names = train_split_names(store, "subj01")[5:25:2]
    listed = _write(tmp_path / "plan.txt", ["# from plan", *names])
    run = be.adapt(
        group_run,
        store.path,
        "subj01",
        tmp_path / "ad",
        images=listed,
        epochs=2,
        cache_dir=tmp_path / "c",
        overwrite_subject=True,
    )
    ((train_rows, val_rows, heldout),) = seen
    expected = listed_rows(store, "subj01", list(enumerate(names, 1)), "x")
    np.testing.assert_array_equal(np.sort(np.concatenate([train_rows, val_rows])), expected)
    np.testing.assert_array_equal(heldout, np.sort(store.split_rows("subj01", "val")))
    assert json.loads((run.path / "summary.json").read_text())["n_train_images"] == train_rows.size
    # the same images given as names, and the errors of the Python API
    be.adapt(
        group_run,
        store.path,
        "subj01",
        tmp_path / "ad2",
        images=names,
        epochs=2,
        cache_dir=tmp_path / "c",
        overwrite_subject=True,
    )
    np.testing.assert_array_equal(np.sort(np.concatenate(seen[1][:2])), expected)
    with pytest.raises(ConfigError, match="pass n_images or images, not both"):
        be.adapt(group_run, store.path, "subj01", tmp_path / "a3", n_images=20, images=names)
    with pytest.raises(ConfigError, match="'images' must be a list file or a sequence"):
        be.adapt(group_run, store.path, "subj01", tmp_path / "a4", images=[1, 2])


def test_adapt_cli_images_errors_are_one_line(store, group_run, tmp_path, capsys):
    base = ["adapt", str(group_run), "--data", str(store.path), "--subject", "subj01"]
    base += ["--out", str(tmp_path / "ad"), "--overwrite-subject", "epochs=1"]
    bad = _write(tmp_path / "bad.txt", ["train-0001_nsd-99999.png"])
    assert main([*base, "--images", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad}: line 1: 'train-0001_nsd-99999.png'" in err, err
    with pytest.raises(SystemExit):  # argparse: not both
        main([*base, "--images", str(bad), "--n-images", "20"])
    assert "not allowed with argument" in capsys.readouterr().err
    assert not (tmp_path / "ad").exists()


def test_zero_shot_adapt_is_the_group_model_at_the_subject(store, group_run, tmp_path, capsys):
    out = tmp_path / "zero"
    args = ["adapt", str(group_run), "--data", str(store.path), "--subject", "subj01"]
    args += ["--out", str(out), "--overwrite-subject", "--n-images", "0"]
    args += [f"cache_dir={tmp_path / 'c'}"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_train_images"] == 0 and summary["n_val_images"] == 0
    assert "best_epoch" not in summary and summary["heldout_images"] > 0
    zero = summary["heldout/zero_shot_pearson_median"]
    # nothing trained: the adapted model is the zero-shot model
    assert summary["heldout/adapted_pearson_median"] == zero
    assert f"zero-shot (N = 0) {zero:.3f}" in printed and "adapted from" not in printed
    before, after = load_model(group_run), load_model(out)
    images = np.asarray(store.images[:4])
    for name in ("subj02", "subj03"):
        for h in ("lh", "rh"):
            np.testing.assert_array_equal(
                before.predict(images, name)[h], after.predict(images, name)[h]
            )
    # the zero-shot subject is the average of the others' parameters
    modules = after.readout.per_subject
    for key, value in modules["subj01"].state_dict().items():
        mean = (modules["subj02"].state_dict()[key] + modules["subj03"].state_dict()[key]) / 2
        # float32 mean of two values: equal up to one rounding (tolerance 1e-6)
        np.testing.assert_allclose(value.numpy(), mean.numpy(), atol=1e-6, rtol=1e-6)


def test_adapt_prints_zero_shot_beside_the_adapted_score(store, group_run, tmp_path):
    config = AdaptConfig(epochs=2, cache_dir=str(tmp_path / "c"))
    summary = adapt(
        group_run,
        store.path,
        "subj01",
        tmp_path / "ad",
        n_images=20,
        config=config,
        overwrite=Overwrite(subject=True),
    )
    line = adapt_module.scores_line(summary)
    assert line.startswith(f"subj01 val split ({summary['heldout_images']} images), median r:")
    assert f"zero-shot (N = 0) {summary['heldout/zero_shot_pearson_median']:.3f}" in line
    assert f"adapted from 20 images {summary['heldout/adapted_pearson_median']:.3f}" in line
