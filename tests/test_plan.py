"""``plan``: which images of a pool to show a new subject (selection rules, command, errors)."""

from __future__ import annotations

import numpy as np
import pytest

import brainencoder as be
from brainencoder.cli.main import main
from brainencoder.data.sources import list_images
from brainencoder.experiments.adapt_images import listed_rows, read_image_list, train_split_names
from brainencoder.experiments.plan import select
from brainencoder.experiments.plan_select import (
    SELECTORS,
    cover,
    dopt,
    kcenter,
    principal_scores,
)
from brainencoder.training.config import load_config
from brainencoder.training.loop import train
from brainencoder.util.errors import BrainEncoderError, ConfigError
from brainencoder.util.ownership import UnsafeOverwriteError
from conftest import TINY_TRAIN


def _clusters(rng, sizes=(30, 5, 5), spread=0.05):
    """Points around three far-apart centres: cluster k holds sizes[k] points."""
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    z = np.concatenate([c + spread * rng.standard_normal((s, 2)) for c, s in zip(centres, sizes)])
    return z, np.repeat(np.arange(3), sizes)


@pytest.mark.parametrize("rule", [cover, kcenter, dopt])
def test_every_rule_picks_one_image_of_each_far_cluster(rule, rng):
    z, cluster = _clusters(rng)
    chosen = rule(z, 3)
    assert len(set(chosen.tolist())) == 3
    assert sorted(cluster[chosen].tolist()) == [0, 1, 2]  # random picks would favour cluster 0


def test_kcenter_starts_in_the_middle_then_goes_to_the_ends():
    z = np.linspace(-1, 1, 21)[:, None]
    np.testing.assert_array_equal(kcenter(z, 3), [10, 0, 20])


def test_dopt_never_repeats_and_prefers_new_directions():
    # many copies of one point, two of another: two picks take one of each, never a copy
    z = np.array([[1.0, 0.0]] * 10 + [[0.0, 0.3]] * 2)
    chosen = dopt(z, 2)
    assert sorted(int(i >= 10) for i in chosen) == [0, 1]


def test_principal_scores_keep_each_components_variance(rng):
    x = rng.standard_normal((50, 8)) * np.arange(1, 9)
    z = principal_scores(x, 3)
    assert z.shape == (50, 3)
    total = ((x - x.mean(0)) ** 2).sum()
    assert (z**2).sum() <= total + 1e-9  # a projection never adds variance (float64 rounding)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-9)


@pytest.mark.parametrize("method", SELECTORS)
def test_select_gives_n_distinct_images_for_every_method(method, rng):
    responses = rng.standard_normal((2, 40, 30)).astype(np.float32)
    chosen = select(responses, 12, method)
    assert chosen.shape == (12,) and len(set(chosen.tolist())) == 12
    assert chosen.min() >= 0 and chosen.max() < 40


@pytest.fixture(scope="module")
def runs(store, tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    for seed in (0, 1):
        train(load_config(None, [*TINY_TRAIN, f"seed={seed}"]), store.path, root / f"s{seed}")
    return root / "s0", root / "s1"


@pytest.fixture
def pool(synth_root, store):
    return synth_root / store.names[0] / "training_split" / "training_images"


def test_plan_writes_n_pool_names_one_per_line_and_the_command_agrees(runs, pool, tmp_path):
    out = tmp_path / "list.txt"
    names = be.plan(runs[0], pool, n=10, out=out)
    assert out.read_text().splitlines() == names
    assert len(set(names)) == 10 and set(names) <= {p.name for p in list_images(pool)}
    assert be.plan(runs[0], pool, n=10) == names  # deterministic
    cli_out = tmp_path / "cli.txt"
    assert (
        main(["plan", str(runs[0]), "--pool", str(pool), "--n", "10", "--out", str(cli_out)]) == 0
    )
    assert cli_out.read_text() == out.read_text()


def test_plan_with_a_store_keeps_only_the_subjects_train_split(runs, pool, store, tmp_path):
    name = store.names[0]
    out = tmp_path / "list.txt"
    names = be.plan(runs[0], pool, n=20, method="kcenter", train_split=(store.path, name), out=out)
    assert set(names) <= set(train_split_names(store, name))
    # the list is what adapt --images reads: its parser takes every line, in the train split
    rows = listed_rows(store, name, read_image_list(out), str(out))
    assert rows.size == 20


def test_disagreement_needs_an_ensemble_and_works_with_one(runs, pool):
    with pytest.raises(ConfigError, match="needs an ensemble"):
        be.plan(runs[0], pool, n=5, method="disagreement")
    names = be.plan(list(runs), pool, n=5, method="disagreement")
    assert len(set(names)) == 5


def test_plan_refuses_bad_outputs_and_sizes_with_one_line(runs, pool, tmp_path, capsys):
    out = tmp_path / "list.txt"
    out.write_text("mine\n")
    with pytest.raises(BrainEncoderError, match="exists; pass --overwrite"):
        be.plan(runs[0], pool, n=5, out=out)
    assert out.read_text() == "mine\n"  # untouched
    be.plan(runs[0], pool, n=5, out=out, overwrite=True)
    assert len(out.read_text().splitlines()) == 5
    with pytest.raises(UnsafeOverwriteError, match="must end in .txt"):
        be.plan(runs[0], pool, n=5, out=tmp_path / "list.csv")
    with pytest.raises(UnsafeOverwriteError, match="lies inside the input"):
        be.plan(runs[0], pool, n=5, out=pool / "list.txt")
    with pytest.raises(ConfigError, match="more than the"):
        be.plan(runs[0], pool, n=10_000)
    with pytest.raises(ConfigError, match="--n must be an integer >= 1"):
        be.plan(runs[0], pool, n=0)
    with pytest.raises(ConfigError, match="--method must be one of"):
        be.plan(runs[0], pool, n=5, method="best")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'train_split' must be"):
        be.plan(runs[0], pool, n=5, train_split="subj01")  # type: ignore[arg-type]
    args = ["plan", str(runs[0]), "--pool", str(pool), "--subject", "subj01", "--out", "x.txt"]
    assert main(args) == 1
    assert "give both --store and --subject" in capsys.readouterr().err


def test_plan_draws_its_picture_beside_the_list_and_says_where(runs, pool, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "list.txt"
    args = ["plan", str(runs[0]), "--pool", str(pool), "--n", "6", "--out", str(out)]
    assert main(args) == 0
    picture = tmp_path / "list.png"
    assert str(picture) in capsys.readouterr().out
    with Image.open(picture) as image:
        assert image.format == "PNG" and image.text.get("brainencoder") == "plan"
        assert image.width > 400 and image.height > 200  # the scatter and the thumbnails
    assert be.plan(runs[0], pool, n=6) == out.read_text().splitlines()  # no out: no picture
    assert sorted(p.name for p in tmp_path.iterdir()) == ["list.png", "list.txt"]
    # plan's own picture is replaced with --overwrite, with the list
    assert main([*args, "--overwrite", "--method", "random"]) == 0


def test_plan_never_replaces_a_picture_it_did_not_write(runs, pool, tmp_path):
    from PIL import Image

    out, picture = tmp_path / "list.txt", tmp_path / "list.png"
    Image.new("RGB", (4, 4)).save(picture)  # the user's own list.png
    mine = picture.read_bytes()
    with pytest.raises(BrainEncoderError, match=r"list.png exists \(plan writes its picture"):
        be.plan(runs[0], pool, n=5, out=out)
    with pytest.raises(UnsafeOverwriteError, match="did not write this file"):
        be.plan(runs[0], pool, n=5, out=out, overwrite=True)
    assert picture.read_bytes() == mine and not out.exists()  # refused before any work
    picture.unlink()
    picture.mkdir()
    with pytest.raises(UnsafeOverwriteError, match="is a folder"):
        be.plan(runs[0], pool, n=5, out=out, overwrite=True)
    assert not out.exists()
