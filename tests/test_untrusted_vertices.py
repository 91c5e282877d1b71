"""Vertex identity where a model meets data: ``submit --data``, ``Prediction.roi(data=)``, indices.

Equal vertex counts are not the same vertices: a dataset whose all-vertices
mask selects other fsaverage vertices (same count) must be refused, naming
the vertices that differ, never silently mapped onto the model's columns.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import brainencoder as be
from brainencoder.baselines.ridge import FeatureSpec, fit_ridge_baseline
from brainencoder.cli.main import main
from brainencoder.core.space import GroupSpace
from brainencoder.data.layout import read_layout
from brainencoder.models.ridge import RidgeModel
from brainencoder.util.errors import DataError

SUBJECT = "subj02"


@pytest.fixture(scope="module")
def pixel_run(store, tmp_path_factory) -> Path:
    """A ridge on pixels of the shared store (fitted in well under a second)."""
    out = tmp_path_factory.mktemp("vertices") / "pix"
    fit_ridge_baseline(store, out, FeatureSpec(kind="pixels"))
    return out


def _mask_file(root: Path, hemi: str = "lh") -> Path:
    return root / SUBJECT / "roi_masks" / f"{hemi}.all-vertices_fsaverage_space.npy"


def _moved_vertex(synth_root: Path, out: Path) -> tuple[Path, int, int]:
    """A copy of the data whose subj02 lh mask has one other vertex: same count, same files.

    Returns the copy, the vertex only it has, and the vertex only the original has.
    """
    root = shutil.copytree(synth_root, out)
    mask = np.load(_mask_file(root))
    first, free = np.flatnonzero(mask)[0], np.flatnonzero(~mask[:10242])[0]
    mask[first], mask[free] = False, True
    np.save(_mask_file(root), mask)
    return root, int(free), int(first)


def _dropped_vertex(synth_root: Path, out: Path) -> tuple[Path, int]:
    """A copy of the data whose subj02 lh has one vertex fewer (its column left out everywhere)."""
    root = shutil.copytree(synth_root, out)
    mask = np.load(_mask_file(root))
    first = int(np.flatnonzero(mask)[0])  # challenge-space column 0
    mask[first] = False
    np.save(_mask_file(root), mask)
    fmri = root / SUBJECT / "training_split" / "training_fmri" / "lh_training_fmri.npy"
    np.save(fmri, np.load(fmri)[:, 1:])
    for labels in (root / SUBJECT / "roi_masks").glob("lh.*_challenge_space.npy"):
        np.save(labels, np.load(labels)[1:])
    return root, first


def _submit(runs: list[Path], data: Path, out: Path) -> int:
    return main(["submit", *map(str, runs), "--data", str(data), "--out", str(out)])


def test_submit_refuses_data_of_other_vertices_with_the_same_counts(
    pixel_run, synth_root, tmp_path, capsys
):
    data, only_data, only_run = _moved_vertex(synth_root, tmp_path / "other")
    assert _submit([pixel_run], data, tmp_path / "s.zip") == 1
    err = capsys.readouterr().err
    n = int(np.load(_mask_file(data)).sum())
    assert err == (
        f"error: {pixel_run}: {SUBJECT} lh: the run's vertices are not those of "
        f"{_mask_file(data)}: {n} vertices in each, but fsaverage vertices only in the data: "
        f"{only_data}; only in the run: {only_run}; pass --data the dataset the run was "
        "trained on, or train a run on this one\n"
    )
    assert not (tmp_path / "s.zip").exists()


def test_submit_refuses_an_ensemble_member_of_other_vertices(
    pixel_run, synth_root, tmp_path, capsys
):
    # a member on the moved-vertex data's space (as if trained on it): the same
    # counts, so its predictions would be averaged column by column with the run's
    moved, only_moved, only_synth = _moved_vertex(synth_root, tmp_path / "moved")
    model = RidgeModel.load(pixel_run / "ridge.safetensors")
    layout = read_layout(moved)
    model.space = GroupSpace.from_masks({s: layout[s].masks for s in model.space.subjects})
    other = tmp_path / "ridge-other.safetensors"
    model.save(other)
    assert _submit([pixel_run], synth_root, tmp_path / "alone.zip") == 0  # its own data: fine
    capsys.readouterr()
    assert _submit([pixel_run, other], synth_root, tmp_path / "s.zip") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {other}: {SUBJECT} lh: the run's vertices are not those")
    assert f"only in the data: {only_synth}; only in the run: {only_moved}; pass" in err
    assert err.count("\n") == 1 and not (tmp_path / "s.zip").exists()


def test_submit_refuses_a_run_lacking_a_subject_of_the_data(
    pixel_run, synth_root, tmp_path, capsys
):
    model = RidgeModel.load(pixel_run / "ridge.safetensors")
    model.space = model.space.without_subject("subj03")
    fewer = tmp_path / "ridge-fewer.safetensors"
    model.save(fewer)
    assert _submit([fewer], synth_root, tmp_path / "s.zip") == 1
    err = capsys.readouterr().err
    assert err == (
        f"error: {fewer}: the run has no subj03 of {synth_root} (it has subj01, subj02); "
        "submit runs trained on every subject of the data\n"
    )


def test_roi_refuses_data_of_other_vertices(pixel_run, synth_root, tmp_path):
    pred = be.load(pixel_run).predict(synth_root / SUBJECT / "test_split" / "test_images", SUBJECT)
    own = pred.roi("V1v")  # the model's own data (the default), and passed explicitly
    np.testing.assert_array_equal(pred.roi("V1v", data=synth_root), own)
    moved, only_data, only_model = _moved_vertex(synth_root, tmp_path / "moved")
    n = int(np.load(_mask_file(moved)).sum())
    message = (
        f"{_mask_file(moved)}: {SUBJECT} lh: these are not the model's vertices, so its ROI "
        f"labels would pick other columns: {n} vertices in each, but fsaverage vertices only "
        f"in the data: {only_data}; only in the model: {only_model}; pass as data the folder "
        "the model was trained on"
    )
    with pytest.raises(DataError, match=f"^{re.escape(message)}$"):
        pred.roi("V1v", data=moved)  # before: other vertices' columns, silently
    fewer, dropped = _dropped_vertex(synth_root, tmp_path / "fewer")
    fewer_text = f"{n - 1} vertices in the data, {n} in the model; fsaverage vertices only in "
    with pytest.raises(DataError, match=re.escape(f"{fewer_text}the model: {dropped}; pass")):
        pred.roi("V1v", data=fewer)  # before: an IndexError


def test_plot_refuses_image_indices_out_of_range(pixel_run, synth_root):
    pred = be.load(pixel_run).predict(synth_root / SUBJECT / "test_split" / "test_images", SUBJECT)
    n = len(pred)
    out_of_range = re.escape(
        f"image 99 is out of range for this prediction of {SUBJECT}: valid indices are "
        f"0..{n - 1} for its {n} images (negative ones count from the end), or 'mean'"
    )
    with pytest.raises(DataError, match=out_of_range):
        pred.plot(image=99)  # before: a bare IndexError
    with pytest.raises(DataError, match=rf"image -{n + 1} is out of range"):
        pred.plot(image=-(n + 1))
    for bad in ("first", 1.5, True):  # before: ValueError, image 1, image 1
        with pytest.raises(DataError, match=rf"image {re.escape(repr(bad))}: expected an image"):
            pred.plot(image=bad)


def test_a_key_that_is_no_hemisphere_is_a_one_line_error(pixel_run, synth_root):
    pred = be.load(pixel_run).predict(synth_root / SUBJECT / "test_split" / "test_images", SUBJECT)
    with pytest.raises(DataError, match=r"^pred\['left'\]: the keys are 'lh' and 'rh'$"):
        pred["left"]
    with pytest.raises(KeyError):  # still a KeyError, as a mapping's
        pred["left"]
    with pytest.raises(DataError, match=r"pred\[0\]: the keys .* \(an image's row: pred\.lh\[i\]"):
        pred[0]
