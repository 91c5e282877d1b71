"""The point and roi_query readouts: equations, learning, regions, the whole CLI path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from brainencoder.cli.main import main
from brainencoder.core.regions import RegionLabels, group_regions
from brainencoder.data.layout import read_layout
from brainencoder.models.modelfile import load_encoder
from brainencoder.models.readouts import ReadoutContext, create_readout
from brainencoder.training.config import load_config
from brainencoder.training.loop import train
from brainencoder.training.step import param_groups
from brainencoder.util.errors import ConfigError
from conftest import FAST_TRAIN

SUBJECTS = ["subj01", "subj02"]


def _point(n_vertices=3, **options):
    torch.manual_seed(0)
    opts = {"channels": 2, "norm": False, "dropout": 0.0, **options}
    readout = create_readout("point", [(2, 4, 4), (2, 2, 2)], SUBJECTS, n_vertices, **opts)
    with torch.no_grad():  # the 1x1 projections are the identity
        for reduce in readout.reduce:
            reduce[0].weight.copy_(torch.eye(2)[:, :, None, None])
            reduce[0].bias.zero_()
        readout.weight.normal_()  # (it starts at zero: the prediction starts at the mean)
    return readout.eval()


def _at_cell(i, j, h, w):
    """Position (x, y) in [-1, 1] of the centre of cell (row i, column j), as raw parameters."""
    return torch.atanh(torch.tensor([(j + 0.5) / w * 2 - 1, (i + 0.5) / h * 2 - 1]))


@pytest.mark.numerics
@pytest.mark.parametrize("sampling", ["bilinear", "gaussian"])
def test_point_reads_each_vertex_at_its_position(sampling):
    readout = _point(sampling=sampling, init_width=1e-3)  # a very narrow Gaussian: one cell
    cells = [(0, 0), (1, 3), (3, 2)]
    with torch.no_grad():
        for v, (i, j) in enumerate(cells):
            readout.positions[0, v] = _at_cell(i, j, 4, 4) / readout.options.position_speed
        readout.selector.copy_(torch.tensor([[30.0, -30.0]] * 3))  # all weight on layer 0
        readout.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, -1.0]]))
        readout.bias.copy_(torch.tensor([0.5, 0.0, -1.0]))
        readout.per_subject["subj02"].gain.fill_(3.0)
    x0, x1 = torch.randn(2, 2, 4, 4), torch.randn(2, 2, 2, 2)
    out = readout([x0, x1], torch.tensor([0, 1]))
    expected = torch.stack(
        [
            torch.stack(
                [
                    x0[b, 0, 0, 0] + 0.5,
                    x0[b, 1, 1, 3],
                    2 * x0[b, 0, 3, 2] - x0[b, 1, 3, 2] - 1.0,
                ]
            )
            for b in range(2)
        ]
    )
    expected[1] *= 3.0  # subj02's gain
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_point_layer_selector_mixes_and_its_entropy_is_penalized():
    readout = _point(selector_entropy=0.5)
    uniform = readout.regularizer()
    torch.testing.assert_close(uniform, torch.tensor(0.5 * np.log(2), dtype=torch.float32))
    with torch.no_grad():
        readout.selector.copy_(torch.tensor([[0.0, np.log(3.0)]] * 3))  # weights 1/4, 3/4
    x0, x1 = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 2, 2)
    both = readout([x0, x1], torch.tensor([0]))
    with torch.no_grad():
        readout.selector.copy_(torch.tensor([[50.0, 0.0]] * 3))
    only0 = readout([x0, x1], torch.tensor([0]))
    with torch.no_grad():
        readout.selector.copy_(torch.tensor([[0.0, 50.0]] * 3))
    only1 = readout([x0, x1], torch.tensor([0]))
    bias = readout.bias
    torch.testing.assert_close(both - bias, 0.25 * (only0 - bias) + 0.75 * (only1 - bias))
    assert not torch.allclose(only0, only1)  # the layers differ, so the mix is not trivial
    assert readout.regularizer() < uniform  # a decided selector costs less
    exempt = {
        id(p)
        for g in param_groups(readout, 0.1, True)
        if g["weight_decay"] == 0.0
        for p in g["params"]
    }
    assert id(readout.positions) in exempt and id(readout.selector) in exempt
    assert id(readout.per_subject["subj01"].gain) in exempt  # even with decay on every parameter
    assert id(readout.weight) not in exempt


def test_point_positions_learn_where_each_vertex_reads():
    """Planted: vertex v reads the (smooth) map at cell c_v. Positions move there."""
    torch.manual_seed(0)
    readout = create_readout(
        "point",
        [(1, 6, 6)],
        ["s"],
        4,
        channels=1,
        norm=False,
        dropout=0.0,
        init_width=2.0,
        position_speed=1.0,  # the lr below suits positions as they are
    )
    with torch.no_grad():
        readout.reduce[0][0].weight.fill_(1.0)
        readout.reduce[0][0].bias.zero_()
        readout.reduce[0][0].weight.requires_grad_(False)

    def cell_of(xy):  # (row, column) of positions in [-1, 1]^2 on the 6 x 6 map
        col = ((xy[:, 0] + 1) / 2 * 6).floor().clamp(0, 5)
        row = ((xy[:, 1] + 1) / 2 * 6).floor().clamp(0, 5)
        return torch.stack([row, col], 1)

    cells = torch.tensor([(0, 0), (0, 5), (5, 1), (3, 4)])
    before = cell_of(readout.position(0).detach())
    assert (before - cells).abs().amax(1).max() >= 2  # they start elsewhere
    opt = torch.optim.Adam([p for p in readout.parameters() if p.requires_grad], lr=0.05)
    subject = torch.zeros(64, dtype=torch.long)
    losses = []
    for _ in range(300):  # feature maps are smooth, as a trunk's are
        x = F.interpolate(torch.randn(64, 1, 3, 3), size=6, mode="bilinear")
        x = x + 0.3 * torch.randn(64, 1, 6, 6)
        y = torch.stack([x[:, 0, i, j] for i, j in cells.tolist()], 1)
        loss = ((readout([x], subject) - y) ** 2).mean()
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = cell_of(readout.position(0).detach())
    assert (after - cells).abs().amax(1).max() <= 1, after  # within one cell of the truth
    assert (after == cells).all(1).sum() >= 3, after
    assert np.mean(losses[-20:]) < 0.6 * np.mean(losses[:20])


def test_point_needs_spatial_maps():
    with pytest.raises(ConfigError, match="set model.prefix_tokens: false"):
        create_readout("point", [(8, 17)], SUBJECTS, 5)
    with pytest.raises(ConfigError, match="'model.readout.sampling' must be one of"):
        create_readout("point", [(8, 4, 4)], SUBJECTS, 5, sampling="nearest")


def test_roi_query_maps_each_vertex_from_its_region():
    torch.manual_seed(0)
    labels = np.array([0, 1, 1, 2, 2, 2])
    readout = create_readout(
        "roi_query",
        [(4, 3, 3), (4, 5)],
        SUBJECTS,
        6,
        context=ReadoutContext(regions=RegionLabels(labels, ["A", "B"])),
        dim=8,
        heads=2,
        dropout=0.0,
    ).eval()
    assert readout.options.region_names == ["A", "B"] and readout.queries.shape == (3, 8)
    with torch.no_grad():
        readout.weight.copy_(torch.randn(1, 8).expand(6, 8))  # one map for every vertex
    feats = [torch.randn(2, 4, 3, 3), torch.randn(2, 4, 5)]
    out = readout(feats, torch.tensor([0, 1]))
    regions = readout.region_outputs(feats)
    torch.testing.assert_close(out[:, 1], out[:, 2])  # same region, same map
    torch.testing.assert_close(out[:, 3], out[:, 5])
    torch.testing.assert_close(out[:, 0], regions[:, 0] @ readout.weight[0])
    assert not torch.allclose(out[:, 0], out[:, 1])
    state = readout.state_dict()
    state["region"] = torch.tensor([0, 1, 1, 2, 2, 7])
    with pytest.raises(ConfigError, match="region labels run from 0 to 7, but it has 2 regions"):
        readout.load_state_dict(state)
    with pytest.raises(ConfigError, match="needs the data's ROI labels"):
        create_readout("roi_query", [(4, 3, 3)], SUBJECTS, 6)
    with pytest.raises(ConfigError, match="must be a positive multiple of 'heads'"):
        create_readout("roi_query", [(4, 3, 3)], SUBJECTS, 6, dim=10, heads=3)


def test_group_regions_take_the_most_specific_roi(synth_root, store):
    layout = read_layout(synth_root, store.names)
    regions = group_regions(layout, store.space)
    assert regions.labels.shape == (store.space.n_vertices,)
    assert {"FFA-1", "V1v"} <= set(regions.names)
    # a vertex in FFA-1 (floc-faces) and in a stream keeps FFA-1: faces come first
    subj = layout["subj01"]
    fs = subj.load_rois("floc-faces", "lh", space="fsaverage")
    ffa = next(k for k, n in subj.load_mapping("floc-faces").items() if n == "FFA-1")
    where = np.flatnonzero(fs[store.space.vertices["lh"]] == ffa)
    assert where.size and (regions.labels[where] == regions.names.index("FFA-1") + 1).all()
    only_streams = group_regions(layout, store.space, ["streams"])
    assert set(only_streams.names) < set(regions.names)


POINT_STAGES = [  # every optional stage of point at once (each starts as the plain readout)
    "model.readout.max_grid=2",
    "model.readout.surround=true",
    "model.readout.output=softplus",
    "model.readout.shared_rank=3",
]


@pytest.mark.parametrize(
    ("readout", "options"),
    [("point", []), ("point", POINT_STAGES), ("roi_query", [])],
    ids=["point", "point-all-stages", "roi_query"],
)
def test_new_readouts_train_resume_evaluate_predict_submit(
    readout, options, store, synth_root, tmp_path, capsys
):
    args = [
        *[a for a in FAST_TRAIN if "hidden_dim" not in a and "latent_dim" not in a],
        "epochs=3",
        f"cache_dir={tmp_path / 'cache'}",
        f"model.readout.name={readout}",
        *options,
    ]
    args += ["model.readout.channels=8"] if readout == "point" else ["model.readout.dim=16"]
    cfg = load_config(None, args)
    train(cfg, store.path, tmp_path / "full")
    assert train(cfg, store.path, tmp_path / "part", stop_after_steps=4) == {"stopped_at_step": 4}
    train(cfg, store.path, tmp_path / "part", resume=True)
    a = load_encoder(tmp_path / "full" / "best.safetensors").state_dict()
    b = load_encoder(tmp_path / "part" / "best.safetensors").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    model = load_encoder(tmp_path / "full" / "best.safetensors")
    assert model.config.readout["name"] == readout
    if options:  # the stages are in the model file, and trained away from their start
        assert model.config.readout["surround"] and model.config.readout["shared_rank"] == 3
        assert (
            model.readout.output_gain.abs().sum() > 0 and model.readout.shared_out.abs().sum() > 0
        )
    run = str(tmp_path / "full")
    truth = str(synth_root / "truth")
    assert main(["evaluate", run, "--split", "test", "--noise-ceiling", truth]) == 0
    assert "challenge score" in capsys.readouterr().out
    images = str(synth_root / "subj01" / "test_split" / "test_images")
    out = tmp_path / "pred.npz"
    assert main(["predict", run, images, "--subject", "subj01", "--out", str(out)]) == 0
    with np.load(out) as f:
        assert f["lh"].shape[0] == 12 and np.isfinite(f["lh"]).all()
    zip_path = tmp_path / "s.zip"
    assert main(["submit", run, "--data", str(synth_root), "--out", str(zip_path)]) == 0
    assert main(["score", str(zip_path), "--truth", truth]) == 0
    assert "challenge score" in capsys.readouterr().out


@pytest.mark.numerics
@pytest.mark.parametrize("surround", [False, True])
def test_point_gaussian_pooling_is_the_normalized_2d_gaussian(surround):
    """The separable pooling equals the softmax over every position of -d^2 / (2 w^2).

    Computed in float64, the two forms agree to rounding (1e-12 relative).
    """
    readout = _point(n_vertices=5, init_width=0.7, surround=surround).double()
    with torch.no_grad():
        readout.positions.uniform_(-0.05, 0.05)
        if surround:  # off: no surround stage (None)
            readout.surround_weight.uniform_(0.1, 0.5)
    fmap = torch.randn(3, 2, 4, 6, dtype=torch.float64)
    scale = torch.rand(5, dtype=torch.float64)
    got = readout.sample(fmap, 0, scale)
    pos, width = readout.position(0), readout.width(0)[:, None]
    ys = (torch.arange(4, dtype=torch.float64) + 0.5) / 4 * 2 - 1
    xs = (torch.arange(6, dtype=torch.float64) + 0.5) / 6 * 2 - 1
    d2 = (pos[:, 0:1] - xs.repeat(4)[None]) ** 2 + (
        pos[:, 1:2] - ys.repeat_interleave(6)[None]
    ) ** 2
    pool = torch.softmax(-d2 / (2 * width**2), dim=1)
    if surround:
        wide = torch.softmax(-d2 / (2 * (3 * width) ** 2), dim=1)
        pool = pool - readout.surround_weight[0][:, None] * wide
    expected = fmap.flatten(2) @ (pool * scale[:, None]).t()
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.numerics
def test_point_bilinear_reading_is_grid_sample():
    """The tent-function matrix reads as ``grid_sample`` (bilinear, zero padding) does.

    Positions anywhere on the map, near its border included; in float64 the
    two forms agree to rounding (1e-12).
    """
    readout = _point(sampling="bilinear", n_vertices=7).double()
    with torch.no_grad():
        readout.positions.uniform_(-0.15, 0.15)  # x speed 20: tanh covers (-1, 1)
    fmap = torch.randn(3, 2, 5, 6, dtype=torch.float64)
    scale = torch.rand(7, dtype=torch.float64)
    got = readout.sample(fmap, 0, scale)
    grid = readout.position(0)[None, :, None, :].expand(3, -1, -1, -1)
    expected = F.grid_sample(fmap, grid, mode="bilinear", align_corners=False)[..., 0] * scale
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
