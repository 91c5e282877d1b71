"""The smoothness prior: surface neighbours of the group space, the penalty, its training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainencoder.core.space import GroupSpace, ico_vertices
from brainencoder.core.surface_graph import mesh_for, surface_edges
from brainencoder.models.readouts import create_readout
from brainencoder.models.readouts.smoothness import smoothness_penalty
from brainencoder.runs.load import load_model
from brainencoder.training.config import load_config
from brainencoder.training.loop import train
from brainencoder.util.errors import ConfigError, DataError
from conftest import TINY_TRAIN

POINT = ["model.readout={name: point, channels: 4, max_grid: 4}", "lr=1e-2"]


def _space(vertices: dict[str, np.ndarray], n_fsaverage: int) -> GroupSpace:
    masks = {}
    for hemi, verts in vertices.items():
        mask = np.zeros(n_fsaverage, dtype=np.int8)
        mask[verts] = 1
        masks[hemi] = mask
    return GroupSpace.from_masks({"subj01": masks})


def test_surface_edges_are_the_fsaverage5_edges_between_group_vertices(store):
    from nilearn.datasets import load_fsaverage

    space = store.space
    edges = surface_edges(space)
    assert edges.ndim == 2 and edges.shape[1] == 2 and len(edges) > space.n_vertices
    assert (edges[:, 0] < edges[:, 1]).all() and len(np.unique(edges, axis=0)) == len(edges)
    sphere = load_fsaverage("fsaverage5")["sphere"]
    expected = set()
    for hemi, part in (("lh", "left"), ("rh", "right")):
        start = space.hemi_slice(hemi).start
        where = {int(v): start + k for k, v in enumerate(space.vertices[hemi])}
        for tri in np.asarray(sphere.parts[part].faces):
            for a, b in ((tri[0], tri[1]), (tri[1], tri[2]), (tri[2], tri[0])):
                if int(a) in where and int(b) in where:
                    expected.add(tuple(sorted((where[int(a)], where[int(b)]))))
    assert set(map(tuple, edges.tolist())) == expected
    # no edge joins the two hemispheres
    lh = space.hemi_slice("lh")
    assert ((edges < lh.stop).all(axis=1) | (edges >= lh.stop).all(axis=1)).all()


def test_mesh_is_the_one_shipped_when_it_holds_every_vertex_else_the_masks_own():
    coarse = {"lh": np.array([10, 11]), "rh": np.array([3, 7])}
    fine = {"lh": np.array([10, 20_000]), "rh": np.array([3])}
    assert mesh_for(_space(coarse, ico_vertices(7))) == "fsaverage5"
    assert mesh_for(_space(fine, ico_vertices(7))) == "fsaverage"
    assert mesh_for(_space(coarse, ico_vertices(4))) == "fsaverage4"
    with pytest.raises(DataError, match="not an fsaverage mesh's .* set smoothness: 0"):
        mesh_for(_space(coarse, 5000))


def test_a_mesh_nilearn_cannot_load_is_a_clear_error(monkeypatch):
    import nilearn.datasets

    def offline(mesh, data_dir=None):
        raise OSError("no network")

    monkeypatch.setattr(nilearn.datasets, "load_fsaverage", offline)
    space = _space({"lh": np.array([10, 20_000]), "rh": np.array([3])}, ico_vertices(7))
    with pytest.raises(DataError, match="cannot load nilearn.s fsaverage mesh .*no network"):
        surface_edges(space)


@pytest.mark.numerics
def test_penalty_is_the_mean_squared_neighbour_difference_of_each_tuning_tensor():
    readout = create_readout("point", [(3, 4, 4)], ["subj01"], 3, channels=2)
    with torch.no_grad():
        for p in readout.parameters():
            p.normal_()
    edges = torch.tensor([[0, 1], [1, 2]])
    got = smoothness_penalty(readout, edges)
    speed = readout.options.position_speed
    tensors = {
        "positions": (readout.positions * speed, 1),
        "log_width": (readout.log_width * speed, 1),
        "selector": (readout.selector, 0),
        "weight": (readout.weight, 0),
    }
    want = 0.0
    for tensor, axis in tensors.values():
        t = tensor.detach().movedim(axis, 0).reshape(3, -1)
        want += float(((t[0] - t[1]) ** 2).sum() + ((t[1] - t[2]) ** 2).sum()) / 2
    # float32 sums of a few dozen terms: agreement to 1e-4 relative
    assert got.item() == pytest.approx(want, rel=1e-4)
    assert smoothness_penalty(readout, torch.zeros((0, 2), dtype=torch.long)).item() == 0


ROI_QUERY = ["model.readout={name: roi_query, dim: 8, queries_per_region: 2}", "lr=1e-2"]


@pytest.mark.parametrize("readout", [POINT, ROI_QUERY], ids=["point", "roi_query"])
def test_training_with_smoothness_makes_neighbours_alike(store, tmp_path, readout):
    base = [*TINY_TRAIN, *readout, "epochs=3", "seed=0"]
    edges = torch.as_tensor(surface_edges(store.space))
    spread = {}
    for weight in (0, 10):
        run = tmp_path / f"s{weight}"
        train(load_config(None, [*base, f"smoothness={weight}"]), store.path, run)
        readout = load_model(run).readout
        spread[weight] = smoothness_penalty(readout, edges).item()
    assert spread[10] < 0.7 * spread[0]  # 3 short epochs of a ramped prior: a clear pull


def test_smoothness_is_refused_for_a_readout_without_tuning_and_below_zero(store, tmp_path):
    with pytest.raises(ConfigError, match="'smoothness' must be >= 0; got -1"):
        load_config(None, ["smoothness=-1"])
    config = load_config(None, [*TINY_TRAIN, "smoothness=1"])  # grouplin_seq: no tuning
    with pytest.raises(ConfigError, match="'grouplin_seq' has none .*set smoothness: 0"):
        train(config, store.path, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before the run folder is claimed


def test_the_prior_ramps_linearly_to_its_weight_at_the_last_step():
    from brainencoder.training.smoothing import smoothness_at

    assert [smoothness_at(s, 4, 2.0) for s in range(4)] == [0.5, 1.0, 1.5, 2.0]
    assert smoothness_at(10, 4, 2.0) == 2.0  # never beyond (a resumed run's extra steps)
    assert smoothness_at(0, 0, 1.0) == 1.0
