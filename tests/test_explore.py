"""explore: in-silico image ranking checked against planted face and place selectivity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainencoder.cli.main import main
from brainencoder.data.prepare import PrepareOptions, prepare_store
from brainencoder.data.synthetic import SyntheticConfig, make_synthetic
from brainencoder.experiments.explore import ArrayRows, explore
from brainencoder.training.config import load_config
from brainencoder.training.loop import train
from brainencoder.util.errors import DataError

SLOW = pytest.mark.slow  # the category_run fixture trains the demo encoder (~2 minutes)


@pytest.fixture(scope="module")
def category_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("explore")
    cfg = SyntheticConfig(n_train=300, n_test=60, n_vertices=600, image_size=128, categories=True)
    data = make_synthetic(root / "data", cfg)
    store = prepare_store(data, root / "store", PrepareOptions(image_size=128), progress=False)
    # the demo encoder with 32 channels: on this small dataset the demo's 16 put 2 of 6 faces
    # on top (32: 4 of 6; one seed), a measured cost of the cheaper readout in a small ROI;
    # the demo's own data put 5 of 6 (docs/performance.md)
    demo = load_config("configs/demo.yaml", ["model.readout.channels=32"])
    train(demo, store.path, root / "run")
    return data, root / "run"


def _categories(data, ranking):
    cat = json.loads((data / "truth" / "categories.json").read_text())
    return [cat[name.split("_nsd-")[1][:5]] for name in ranking.image]


@SLOW
def test_top_images_are_the_planted_category(category_run, tmp_path, monkeypatch):
    data, run = category_run
    images = data / "subj01" / "test_split" / "test_images"
    out = explore(run, images, "all", ["FFA-1", "PPA"], tmp_path / "faces", top=6)
    ranking = pd.read_csv(out["ranking"])
    cats = _categories(data, ranking)
    assert cats[:6].count("face") >= 4, cats[:6]  # faces drive FFA-1 more than PPA
    assert cats[-6:].count("place") >= 4, cats[-6:]
    for key in ("page", "montage", "histogram", "map"):
        assert out[key].stat().st_size > 1000
    assert "Which images drive FFA-1 - PPA?" in out["page"].read_text()
    import brainencoder.inference.images as predict

    def no_prediction(*args, **kwargs):
        raise AssertionError("a second query over the same folder must use the cache")

    monkeypatch.setattr(predict, "iter_predictions", no_prediction)
    places = explore(run, images, "subj01", ["PPA"], tmp_path / "places", top=6)
    ranked = _categories(data, pd.read_csv(places["ranking"]))
    assert ranked[:6].count("place") >= 4, ranked[:6]
    monkeypatch.undo()

    # the same pixels in an HDF5 file, as NSD's stimuli: the same ranking, by row
    import h5py

    from brainencoder.data.images import load_image
    from brainencoder.inference.images import list_images

    paths = list_images(images)
    with h5py.File(tmp_path / "stimuli.hdf5", "w") as f:
        f["imgBrick"] = np.stack([load_image(p) for p in [paths[0], *paths]])  # row 0: extra
    by_row = explore(
        run,
        tmp_path / "stimuli.hdf5",
        "subj01",
        ["PPA"],
        tmp_path / "h5",
        top=6,
        array=ArrayRows(rows=slice(1, None)),
    )
    rows = pd.read_csv(by_row["ranking"])
    by_name = pd.read_csv(places["ranking"])
    assert [paths[r - 1].name for r in rows.image] == by_name.image.tolist()
    np.testing.assert_allclose(rows.value, by_name.value, rtol=1e-5, atol=1e-6)
    query = json.loads((tmp_path / "h5" / "query.json").read_text())
    assert query["dataset"] is None and query["rows"] == [1, None]


@SLOW
def test_explore_errors_name_what_is_valid(category_run, tmp_path, capsys):
    data, run = category_run
    images = data / "subj01" / "test_split" / "test_images"
    with pytest.raises(DataError, match="unknown ROI 'FFA-9'; valid names: .*FFA-1.*PPA"):
        explore(run, images, "subj01", ["FFA-9"], tmp_path / "x")
    assert (
        main(
            [
                "explore",
                str(run),
                str(images),
                "--subject",
                "subj07",
                "--roi",
                "PPA",
                "--out",
                str(tmp_path / "y"),
            ]
        )
        == 1
    )
    assert "subject 'subj07' is not in this model" in capsys.readouterr().err
    assert not np.any([p.exists() for p in (tmp_path / "x", tmp_path / "y")])


@pytest.mark.numerics
def test_roi_scores_read_in_blocks_equal_the_whole_array(rng):
    from brainencoder.experiments.explore import _roi_scores

    values = rng.normal(size=(23, 11)).astype(np.float32)
    masks = [np.arange(11) < 4, np.arange(11) >= 7]
    for rois in (masks[:1], masks):
        score, mean = _roi_scores(values, rois, rows=5)  # 5 blocks, the last partial
        expected = values[:, rois[0]].mean(1)
        if len(rois) == 2:
            expected = expected - values[:, rois[1]].mean(1)
        np.testing.assert_allclose(score, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(mean, values.mean(0), rtol=1e-5, atol=1e-6)


def test_image_source_keys_change_with_what_they_read(tmp_path):
    from PIL import Image

    from brainencoder.data.sources import ImageArray, ImageFiles

    paths = [tmp_path / f"{i}.png" for i in range(2)]
    for p in paths:
        Image.new("RGB", (8, 8), "red").save(p)
    key = ImageFiles(paths).key()
    assert ImageFiles(paths).key() == key and ImageFiles(paths[:1]).key() != key
    Image.new("RGB", (9, 9), "blue").save(paths[1])  # an image replaced: a new prediction cache
    assert ImageFiles(paths).key() != key
    np.save(tmp_path / "a.npy", np.zeros((3, 4, 4, 3), np.uint8))
    with (
        ImageArray(tmp_path / "a.npy") as whole,
        ImageArray(tmp_path / "a.npy", rows=slice(1, 3)) as part,
    ):
        assert whole.key() != part.key() and part.names == ["1", "2"] and len(part) == 2


# ----------------------------------------------------------------------------- inputs and --out


@pytest.fixture(scope="module")
def tiny_run(store, tmp_path_factory):
    from conftest import TINY_TRAIN

    root = tmp_path_factory.mktemp("tiny")
    train(load_config(None, [*TINY_TRAIN, f"cache_dir={root / 'cache'}"]), store.path, root / "run")
    return root / "run"


def _explore_cli(run, images, out, *extra):
    argv = ["explore", str(run), str(images), "--subject", "subj01", "--roi", "V1v"]
    return main([*argv, "--top", "3", "--out", str(out), *extra])


def test_explore_refuses_data_of_another_vertex_space(tiny_run, synth_root, tmp_path, capsys):
    import shutil

    data = shutil.copytree(synth_root, tmp_path / "other")  # same vertex counts, other vertices
    mask_file = data / "subj01" / "roi_masks" / "lh.all-vertices_fsaverage_space.npy"
    mask = np.load(mask_file)
    first, free = np.flatnonzero(mask)[0], np.flatnonzero(~mask[:10242])[0]
    mask[first], mask[free] = False, True
    np.save(mask_file, mask)
    images = synth_root / "subj01" / "test_split" / "test_images"
    message = "subj01's vertices in this dataset are not those of the model's subj01"
    with pytest.raises(DataError, match=f"lh.all-vertices_fsaverage_space.npy: {message}"):
        explore(tiny_run, images, "subj01", ["V1v"], tmp_path / "x", data=data)
    assert _explore_cli(tiny_run, images, tmp_path / "y", "--data", str(data)) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {mask_file}: {message}") and err.count("\n") == 1
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    # the run's own data (the default) and the same data passed explicitly are fine
    out = explore(tiny_run, images, "subj01", ["V1v"], tmp_path / "z", top=3, data=synth_root)
    assert len(pd.read_csv(out["ranking"])) == len(list(images.iterdir()))


def test_explore_out_follows_the_ownership_rules(
    tiny_run, store, synth_root, tmp_path, monkeypatch, capsys
):
    from brainencoder.util.ownership import MARKER, owned_kind

    images = tmp_path / "images"  # a copy: nothing may be written among the stimuli
    images.mkdir()
    for p in sorted((synth_root / "subj01" / "test_split" / "test_images").iterdir())[:6]:
        (images / p.name).write_bytes(p.read_bytes())
    before = sorted(p.name for p in images.iterdir())
    user = tmp_path / "mine"
    user.mkdir()
    (user / "index.html").write_text("my page")
    monkeypatch.chdir(tmp_path)
    refused = {
        images: "lies inside the input",
        images / "explore": "lies inside the input",
        synth_root: "lies inside the input",
        store.path / "explore": "lies inside the input",
        tiny_run: "holds, contains or lies inside the input",  # it holds the run
        tmp_path: "is or contains the current folder",
        Path("."): "is or contains the current folder",
        user: "it holds files brainencoder did not write, not a brainencoder explore",
    }
    for out, message in refused.items():
        assert _explore_cli(tiny_run, images, out) == 1, out
        err = capsys.readouterr().err
        assert err.startswith("error: refusing to ") and message in err, (out, err)
    assert sorted(p.name for p in images.iterdir()) == before
    assert (user / "index.html").read_text() == "my page"
    assert not list(tiny_run.glob("*.png"))

    # inside the run folder (as the demo and the report place it), marked as its own
    out = tiny_run / "explore-v1"
    assert _explore_cli(tiny_run, images, out) == 0
    assert owned_kind(out) == "explore" and (out / MARKER).is_file()
    first = pd.read_csv(out / "ranking.csv")
    assert sorted(first.image) == before  # the images, never a page of explore's own
    assert _explore_cli(tiny_run, images, out) == 0  # its own output is replaced
    pd.testing.assert_frame_equal(pd.read_csv(out / "ranking.csv"), first)

    # a failure while writing leaves the previous output as it was, and nothing aside
    import brainencoder.experiments.explore as module

    def broken(*args, **kwargs):
        raise DataError("the map failed")

    monkeypatch.setattr(module, "_cortex_map", broken)
    page = (out / "index.html").read_bytes()
    with pytest.raises(DataError, match="the map failed"):
        explore(tiny_run, images, "subj01", ["FFA-1"], out, top=2)
    assert (out / "index.html").read_bytes() == page
    assert json.loads((out / "query.json").read_text())["rois"] == ["V1v"]
    assert sorted(p.name for p in tiny_run.iterdir() if p.name.endswith(".tmp")) == []


def test_explore_and_compare_outputs_of_earlier_versions_are_recognised(tmp_path):
    from brainencoder.util.ownership import check_replaceable, owned_kind

    old = tmp_path / "explore"
    old.mkdir()
    for name in ("ranking.csv", "montage.png", "index.html"):
        (old / name).write_text("x")
    (old / "query.json").write_text(
        json.dumps({"run": "r", "images": "i", "subject": "all", "rois": ["PPA"], "top": 8})
    )
    assert owned_kind(old) == "explore"
    check_replaceable(old, "explore")
    compared = tmp_path / "compare"
    compared.mkdir()
    (compared / "comparison.csv").write_text("run,subject,roi,metric,value,diff,ci_low,ci_high\n")
    (compared / "index.html").write_text("x")
    assert owned_kind(compared) == "compare"
    for folder in (old, compared):
        (folder / "notes.txt").write_text("mine")  # anything else: not recognised
        assert owned_kind(folder) is None
