"""export: a self-contained folder for a model hub; loaded by path or as hf:ORG/NAME.

A tiny run (and a second seed: an ensemble) is exported, then its store and
data are moved away: the folder, a copy of it and its copy in a local Hugging
Face cache predict, map and select ROIs bit-identically to the run, and every
command that takes a run takes it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

import brainencoder as be
from brainencoder.cli.main import main
from brainencoder.data.prepare import PrepareOptions, prepare_store
from brainencoder.data.synthetic import SyntheticConfig, make_synthetic
from brainencoder.models.modelfile import read_metadata
from brainencoder.runs.exported import open_roi_layout, read_manifest
from brainencoder.runs.load import load_model
from brainencoder.util.errors import CheckpointError, ConfigError, DataError
from brainencoder.util.fileio import load_mapping
from brainencoder.util.ownership import UnsafeOverwriteError
from conftest import TINY_TRAIN

GROUP = ["subj01", "subj02", "subj03"]
SUBJECT = "subj02"


def _roi_name(data: Path, subject: str) -> str:
    """A named ROI of the synthetic label files with vertices in ``subject``."""
    folder = data / subject / "roi_masks"
    for path in sorted(folder.glob("mapping_*.npy")):
        group = path.name[len("mapping_") : -len(".npy")]
        labels = np.concatenate(
            [np.load(folder / f"{h}.{group}_challenge_space.npy") for h in ("lh", "rh")]
        )
        for value, name in sorted(load_mapping(path).items()):
            if value > 0 and (labels == value).any():
                return name
    raise AssertionError("no ROI with vertices")


def _predict_all(model: be.Model, images: Path, roi: str) -> dict[str, np.ndarray]:
    pred = model.predict(images, subject=SUBJECT)
    maps = pred.to_fsaverage()
    return {
        "lh": pred.lh,
        "rh": pred.rh,
        "fs_lh": maps["lh"],
        "fs_rh": maps["rh"],
        "roi": pred.roi(roi),
    }


def _hub_cache(cache: Path, folder: Path, repo: str, revision: str = "0" * 40) -> None:
    """``folder`` as ``hf download repo`` leaves it: blobs, snapshot links, refs/main."""
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / revision
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            blob = repo_dir / "blobs" / hashlib.sha256(path.read_bytes()).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, blob)
            link = snapshot / path.relative_to(folder)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(revision)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Two tiny runs, their exports and reference predictions; then store and data moved away."""
    root = tmp_path_factory.mktemp("export")
    cfg = SyntheticConfig(
        n_subjects=3, held_out=1, n_train=80, n_test=12, n_vertices=150, image_size=48
    )
    data = make_synthetic(root / "data", cfg)
    store = prepare_store(
        data, root / "store", PrepareOptions(image_size=32), subjects=GROUP, progress=False
    )
    run = be.train(None, store=store.path, out=root / "p1", overrides=TINY_TRAIN).path
    seed = be.train(
        None, store=store.path, out=root / "p1-seed2", overrides=[*TINY_TRAIN, "seed=1"]
    )
    be.evaluate(run, "testval")  # the card's scores
    images = shutil.copytree(data / SUBJECT / "test_split" / "test_images", root / "images")
    roi = _roi_name(data, SUBJECT)
    ref = _predict_all(be.load(run), images, roi)
    ref_ensemble = _predict_all(be.load(run, seed.path), images, roi)
    single = be.export(run, root / "share" / "tiny", repo_id="org/tiny")
    ensemble = be.export([run, seed.path], root / "share" / "seeds")
    moved = SimpleNamespace(data=root / "moved-data", store=root / "moved-store")
    os.rename(data, moved.data)  # the exports must not need them
    os.rename(store.path, moved.store)
    return SimpleNamespace(
        root=root,
        run=run,
        single=single,
        ensemble=ensemble,
        images=images,
        roi=roi,
        ref=ref,
        ref_ensemble=ref_ensemble,
        moved=moved,
    )


@pytest.fixture
def hub(shared, tmp_path, monkeypatch):
    """A local Hugging Face cache holding both exports (org/tiny, org/seeds)."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    _hub_cache(cache, shared.single, "org/tiny")
    _hub_cache(cache, shared.ensemble, "org/seeds")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_the_folder_holds_the_model_rois_and_card_and_nothing_of_this_machine(shared):
    files = sorted(p.relative_to(shared.single).as_posix() for p in shared.single.rglob("*"))
    assert {"README.md", "brainencoder.json", "model.safetensors"} <= set(files)
    for subject in GROUP:
        for hemi in ("lh", "rh"):
            assert f"rois/{subject}/{hemi}.all-vertices_fsaverage_space.npy" in files
            assert f"rois/{subject}/{hemi}.floc-faces_challenge_space.npy" in files
        assert f"rois/{subject}/mapping_floc-faces.json" in files
    assert not [f for f in files if f.endswith((".pkl", ".pt", ".pth", ".yaml"))]
    ensemble = sorted(p.name for p in shared.ensemble.glob("*.safetensors"))
    assert ensemble == ["model-1.safetensors", "model-2.safetensors"]
    manifest = read_manifest(shared.ensemble)
    assert manifest.members == ["p1", "p1-seed2"] and sorted(manifest.subjects) == GROUP
    # no path of this machine anywhere, in any file (model headers included)
    private = {str(shared.root), str(shared.root.resolve()), str(Path.home()), os.getcwd()}
    for folder in (shared.single, shared.ensemble):
        for path in folder.rglob("*"):
            if path.is_file():
                text = path.read_bytes()
                found = [p for p in private if p.encode() in text]
                assert not found, f"{path} names {found}"
        for path in folder.glob("*.safetensors"):
            meta = json.dumps(read_metadata(path))
            assert not [p for p in private if p in meta], path
    for path in shared.single.rglob("*.npy"):  # plain arrays: no pickle anywhere
        np.load(path, allow_pickle=False)


def test_loads_by_path_and_by_hub_name_bit_identically_without_store_or_data(shared, hub, tmp_path):
    assert not (shared.root / "data").exists() and not (shared.root / "store").exists()
    copy = shutil.copytree(shared.single, tmp_path / "elsewhere" / "tiny")
    for source, ref in (
        (shared.single, shared.ref),
        (copy, shared.ref),
        ("hf:org/tiny", shared.ref),
        (shared.ensemble, shared.ref_ensemble),
        ("hf:org/seeds", shared.ref_ensemble),
    ):
        model = be.load(source)
        assert model.subjects == GROUP
        got = _predict_all(model, shared.images, shared.roi)
        for key, value in ref.items():  # predictions, fsaverage maps (NaN off), the ROI
            np.testing.assert_array_equal(got[key], value, err_msg=f"{source} {key}")
    assert be.load("hf:org/tiny").path.is_relative_to(hub)


def test_the_model_card_is_yaml_front_matter_and_markdown(shared):
    text = (shared.single / "README.md").read_text()
    assert text.startswith("---\n")
    _, head, body = text.split("---\n", 2)
    front = yaml.safe_load(head)
    assert front["library_name"] == "brainencoder"
    assert "brainencoder" in front["tags"] and "fmri" in front["tags"]
    assert front["license"] == "other" and front["datasets"] == ["algonauts-2023"]
    space = be.load(shared.single).space
    n_lh, n_rh = (space.n_subject_vertices(SUBJECT, h) for h in ("lh", "rh"))
    for needed in (
        "resnet18",  # the trunk
        "grouplin_seq",  # the readout
        f"| {SUBJECT} | {n_lh} | {n_rh} |",  # subjects and vertices
        "| train_on | [train] |",  # how it was trained (config.yaml)
        "| epochs | 1 |",
        "testval split",  # its scores, with their split
        'be.load("hf:org/tiny")',  # how to load it
        "hf download org/tiny",
        "childmindresearch/algonauts23",  # the original entry
        "arXiv:2308.02351",
    ):
        assert needed in body, needed
    import markdown

    html = markdown.markdown(body, extensions=["tables", "fenced_code"])
    assert html.count("<table>") >= 4 and "<h2>Citation</h2>" in html
    assert "<h1>tiny</h1>" in html and '<code class="language-python">' in html
    seeds = (shared.ensemble / "README.md").read_text()
    assert "ensemble of 2 models" in seeds and "**p1-seed2**" in seeds


def test_a_hub_name_not_in_the_cache_is_one_line_saying_where_and_how(hub, capsys):
    with pytest.raises(
        DataError, match=r"^hf:org/nothere: not in the local Hugging Face cache "
    ) as e:
        be.load("hf:org/nothere")
    message = str(e.value)
    assert "\n" not in message and str(hub) in message and "hf download org/nothere" in message
    assert main(["predict", "hf:org/nothere", "x", "--subject", "subj01", "--out", "p.npz"]) == 1
    assert capsys.readouterr().err.startswith("error: x: ")  # images are checked first
    with pytest.raises(ConfigError, match=r"^hf:\.\./x: a model on the Hugging Face hub is named"):
        be.load("hf:../x")


def test_export_refuses_an_output_it_may_not_replace(shared, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(UnsafeOverwriteError, match="files brainencoder did not write"):
            be.export(shared.single, mine, overwrite=overwrite)
    assert (mine / "notes.txt").read_text() == "keep me" and len(list(mine.iterdir())) == 1
    out = be.export(shared.single, tmp_path / "again")
    with pytest.raises(CheckpointError, match=r"already holds an exported model; pass --overwrite"):
        be.export(shared.single, out)
    assert be.export(shared.single, out, overwrite=True) == out  # its own: replaced
    with pytest.raises(UnsafeOverwriteError, match="holds, contains or lies inside the input"):
        be.export(shared.single, shared.single / "inner")
    with pytest.raises(UnsafeOverwriteError, match="holds, contains or lies inside the input"):
        be.export(shared.run, shared.run, overwrite=True)
    assert not (tmp_path / ".again.tmp").exists()


def test_every_command_that_takes_a_run_takes_an_exported_folder(shared, hub, tmp_path, capsys):
    moved = shared.moved
    images = str(shared.images)
    out = tmp_path / "p.npz"
    assert main(["predict", "hf:org/tiny", images, "--subject", SUBJECT, "--out", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out)["lh"], shared.ref["lh"])
    page = tmp_path / "explore"
    args = ["explore", "hf:org/seeds", images, "--subject", SUBJECT, "--roi", shared.roi]
    assert main([*args, "--out", str(page), "--top", "2"]) == 0
    assert (page / "index.html").is_file()
    group_data = tmp_path / "group-data"  # the challenge's layout of the model's subjects
    for name in GROUP:
        shutil.copytree(moved.data / name, group_data / name)
    zip_path = str(tmp_path / "s.zip")
    assert main(["submit", str(shared.single), "--data", str(group_data), "--out", zip_path]) == 0
    assert main(["evaluate", "hf:org/tiny", "--store", str(moved.store)]) == 1
    assert "pass --out DIR" in capsys.readouterr().err
    evaluated = tmp_path / "eval"
    args = ["evaluate", "hf:org/tiny", "--store", str(moved.store), "--out", str(evaluated)]
    assert main(args) == 0 and (evaluated / "metrics.csv").is_file()
    args = ["adapt", "hf:org/seeds", "--data", str(moved.data), "--subject", "subj04"]
    assert main([*args, "--out", str(tmp_path / "no")]) == 1
    assert "an ensemble of 2 models; adapt starts from one model" in capsys.readouterr().err
    # adapt: a new subject fitted without the original store
    adapted = tmp_path / "adapted"
    args = ["adapt", "hf:org/tiny", "--data", str(moved.data), "--subject", "subj04"]
    assert main([*args, "--out", str(adapted), "--n-images", "40", "epochs=2"]) == 0
    model = be.load(adapted)
    assert model.subjects == [*GROUP, "subj04"]
    pred = model.predict(shared.images, subject=SUBJECT)
    np.testing.assert_array_equal(pred.lh, shared.ref["lh"])  # the others untouched
    np.testing.assert_array_equal(pred.roi(shared.roi), shared.ref["roi"])  # ROIs of the export
    # and the adapted run exports in turn, its group subjects' ROI files from the export
    again = be.export(adapted, tmp_path / "share-adapted")
    assert sorted(read_manifest(again).subjects) == [*GROUP, "subj04"]


def test_a_received_folder_is_checked_as_untrusted(shared, tmp_path):
    def copy(name: str) -> Path:
        return shutil.copytree(shared.single, tmp_path / name)

    bad = copy("member")
    manifest = json.loads((bad / "brainencoder.json").read_text())
    manifest["members"][0]["file"] = "../elsewhere.safetensors"
    (bad / "brainencoder.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"member 1 must be a mapping with file"):
        load_model(bad)
    bad = copy("subject")
    manifest = json.loads((bad / "brainencoder.json").read_text())
    manifest["subjects"]["../subj09"] = {"roi_groups": []}
    (bad / "brainencoder.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"subject '\.\./subj09' is not a plain name"):
        load_model(bad)
    bad = copy("link")
    outside = tmp_path / "outside.npy"
    np.save(outside, np.ones(163842, bool))
    target = bad / "rois" / "subj01" / "lh.all-vertices_fsaverage_space.npy"
    target.unlink()
    target.symlink_to(outside)
    with pytest.raises(CheckpointError, match="points outside the exported folder"):
        open_roi_layout(bad, ["subj01"])
    bad = copy("pickle")
    np.save(bad / "rois" / "subj01" / "lh.floc-faces_challenge_space.npy", np.array([{}], object))
    layout = open_roi_layout(bad, ["subj01"])
    with pytest.raises(CheckpointError, match=r"not a readable \.npy array"):
        layout["subj01"].load_rois("floc-faces", "lh")
    bad = copy("mapping")
    (bad / "rois" / "subj01" / "mapping_floc-faces.json").write_text('{"one": "FFA-1"}')
    with pytest.raises(CheckpointError, match="is not an integer label with a name"):
        open_roi_layout(bad, ["subj01"])["subj01"].load_mapping("floc-faces")
    with pytest.raises(DataError, match="holds ROI labels of the subject's own vertices only"):
        layout["subj01"].load_rois("floc-faces", "lh", space="fsaverage")


def test_export_is_a_documented_keyword_signature():
    from test_api_signatures import _documented, _sections

    params = inspect.signature(be.export).parameters
    assert [p for p in params if params[p].kind == inspect.Parameter.POSITIONAL_OR_KEYWORD] == [
        "runs",
        "out",
    ]
    assert all(p.annotation is not inspect.Parameter.empty for p in params.values())
    doc = inspect.getdoc(be.export)
    assert [n for n, _ in _documented(doc)] == list(params)
    assert ">>> " in _sections(doc)["Examples"]
    with pytest.raises(ConfigError, match=r"^'datasets' must be a list of names"):
        be.export("run", "out", datasets="algonauts")


def test_an_exported_ensemble_is_held_out_only_where_every_member_is(shared, tmp_path):
    seen_val = be.train(
        None,
        store=shared.moved.store,
        out=tmp_path / "on-val",
        overrides=[*TINY_TRAIN, "train_on=[train, val]"],
    )
    with pytest.raises(DataError, match=r"^subj01: no ROI label files found for it .*--data"):
        be.export([shared.run, seen_val.path], tmp_path / "mixed")  # the data has moved
    mixed = be.export([shared.run, seen_val.path], tmp_path / "mixed", data=shared.moved.data)
    for path in mixed.glob("*.safetensors"):  # every member carries the ensemble's record
        assert json.loads(read_metadata(path)["trained_on"])["subjects"]["subj01"]["splits"] == [
            "train",
            "val",
        ]
    with pytest.raises(DataError, match=r"subj01 trained on the val images"):
        be.evaluate(mixed, "val", store=shared.moved.store, out_dir=tmp_path / "e")
    table = be.evaluate(mixed, "testval", store=shared.moved.store, out_dir=tmp_path / "t")
    assert set(table.subject) == {*GROUP, "all"}
    assert "| train, val |" in (mixed / "README.md").read_text()


def test_the_card_lists_every_trunk_of_a_several_trunk_model():
    from brainencoder.runs.card import model_facts

    config = {
        "trunk": "resnet18",
        "pretrained": True,
        "trunks": [
            {"trunk": "resnet18", "layers": [-1], "pretrained": None},
            {"trunk": "/home/me/models/dinov2-small", "layers": [2, 5], "pretrained": False},
        ],
        "readout": {"name": "point"},
        "img_size": 64,
    }
    facts = model_facts("m", {"config": json.dumps(config)})
    # the second trunk's local folder keeps only its last part; pretrained follows each entry
    assert facts["trunk"] == "resnet18 (pretrained) + dinov2-small"
    assert facts["layers"] == "[-1] + [2, 5]"
    single = model_facts("m", {"config": json.dumps({**config, "trunks": []})})
    assert single["trunk"] == "resnet18 (pretrained)" and single["layers"] == "?"
