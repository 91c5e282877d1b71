"""synthesize: images made for a region by checked by models that did not make them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import brainencoder as be
from brainencoder.cli.main import main
from brainencoder.core.regions import RegionLabels, roi_mask
from brainencoder.data.layout import read_layout
from brainencoder.experiments.synthesize import Members, load_members, make_images
from brainencoder.experiments.synthesize_param import AscentOptions, FourierImages, ascend
from brainencoder.models.encoder import create_encoder
from brainencoder.training.config import load_config
from brainencoder.training.loop import train
from brainencoder.util.errors import ConfigError, DataError
from brainencoder.util.ownership import UnsafeOverwriteError
from conftest import TINY_TRAIN

FEW = {"n": 2, "options": {"steps": 3, "jitter": 2}}  # plumbing, not learning: seconds


@pytest.fixture(scope="module")
def runs(store, tmp_path_factory):
    """Two one-epoch tiny encoders (two seeds) of the shared small store."""
    root = tmp_path_factory.mktemp("synthesize")
    out = []
    for seed in (0, 1):
        train(load_config(None, [*TINY_TRAIN, f"seed={seed}"]), store.path, root / f"run{seed}")
        out.append(root / f"run{seed}")
    return out


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """Twelve natural images of the synthetic generator as a uint8 .npy array."""
    from brainencoder.data.synthetic_images import draw_images

    images, _ = draw_images(np.random.default_rng(1), 12, True, 0)
    path = tmp_path_factory.mktemp("pool") / "pool.npy"
    np.save(path, (np.stack(images) * 255).round().astype(np.uint8))
    return path


def test_the_fourier_parametrization_starts_grey_and_ascent_raises_the_objective():
    with torch.no_grad():
        images = FourierImages(2, 24, torch.Generator().manual_seed(0))()
    assert images.shape == (2, 3, 24, 24) and 0 <= images.min() and images.max() <= 1
    assert abs(float(images.mean()) - 0.5) < 0.05  # a grey start (sigmoid of ~0)

    def left_bright(x):  # a region that likes light on the left half and dark on the right
        return x[..., :12].mean((1, 2, 3)) - x[..., 12:].mean((1, 2, 3))

    made = ascend(left_bright, 2, 24, AscentOptions(steps=40, lr=0.1, jitter=1, tv=0.0))
    # from about 0 at the grey start (|value| < 0.05, above) to over a third of the largest
    # possible contrast, 1 (measured: 0.44 and 0.46)
    assert (left_bright(made) > 0.33).all(), left_bright(made)


@pytest.mark.parametrize(
    "readout",
    [
        {"name": "grouplin_seq", "hidden_dim": 8, "latent_dim": 4},
        {"name": "grouplin", "hidden_dim": 8, "latent_dim": 4},
        {"name": "point", "channels": 4},
        {"name": "roi_query", "dim": 8, "heads": 2},
    ],
    ids=lambda r: r["name"],
)
def test_gradients_reach_the_pixels_through_every_readout(store, readout):
    torch.manual_seed(0)
    space = store.space
    regions = RegionLabels(np.arange(space.n_vertices) % 3, ["A", "B"])
    model = create_encoder("tiny", space, regions=regions, img_size=32, readout=readout)
    with torch.no_grad():  # readouts start with some maps at 0 (a constant prediction)
        for p in model.readout.parameters():
            p.add_(0.1 * torch.randn_like(p))
    members = Members([model.eval().requires_grad_(False)], ["random"], 32)
    mask = np.zeros(sum(space.n_subject_vertices("subj01", h) for h in ("lh", "rh")), bool)
    mask[:20] = True
    # a gradient check, not the defaults' tuning: a small step on the plain 1 / f spectrum
    few = {"lr": 0.05, "decay": 1.0}
    start, _ = make_images(
        members, "subj01", [mask], 2, AscentOptions(steps=1, **{**few, "lr": 1e-9})
    )
    made, held_out = make_images(members, "subj01", [mask], 2, AscentOptions(steps=8, **few))
    assert held_out.tolist() == [0, 0] and made.dtype == np.uint8 and made.shape == (2, 32, 32, 3)

    def value(images):
        pred = model.predict(images, "subj01")
        return np.concatenate([pred["lh"], pred["rh"]], 1)[:, mask].mean(1)

    assert (value(made) > value(start)).all(), (value(start), value(made))


def test_synthesize_writes_the_images_their_responses_and_the_page(runs, store, pool, tmp_path):
    out = be.synthesize(runs, subject="subj01", rois="V1v", out=tmp_path / "made", pool=pool, **FEW)
    table = pd.read_csv(out["table"])
    assert len(table) == 2 and table.checked_by.tolist() == [str(runs[0]), str(runs[1])]
    # kept exactly when the member that did not make an image predicts it above its pool best
    assert (table.kept == (table.checker_value > table.checker_pool_best)).all()
    kept = table[table.kept]
    for name in table.image:
        assert (tmp_path / "made" / name).is_file()
    assert all(name.startswith("images/") for name in kept.image)
    responses = np.load(out["responses"])
    n_cols = sum(be.load(runs[0]).space.n_subject_vertices("subj01", h) for h in ("lh", "rh"))
    assert responses.shape == (len(kept), n_cols) and responses.dtype == np.float32
    page = out["page"].read_text()
    assert "Images made for V1v" in page and "its own best image of the pool" in page
    for figure in ("montage.png", "values.png"):
        assert (tmp_path / "made" / figure).stat().st_size > 1000
    assert len(list((tmp_path / "made" / "maps").glob("*.png"))) == len(kept)
    # the pool's predictions are cached beside each run, as explore's are
    assert all(len(list((r / "cache" / "synthesize").glob("*.npy"))) == 1 for r in runs)
    query = json.loads((tmp_path / "made" / "query.json").read_text())
    assert query["rois"] == ["V1v"] and query["options"]["steps"] == 3

    # the values in the table are the models' predictions of the PNG pixels written
    from PIL import Image

    first = np.asarray(Image.open(tmp_path / "made" / table.image[0]))[None]
    pred = be.load(runs[0]).predict(first, "subj01")
    layout = read_layout(store.manifest["source"]["root"], ["subj01"])
    v1v = np.concatenate([pred.lh, pred.rh], 1)[:, roi_mask(layout["subj01"], "V1v")].mean()
    assert abs(v1v - table.checker_value[0]) < 1e-4  # float32 sums in another order


def test_a_contrast_on_the_command_line_and_one_run_checking_itself(runs, tmp_path, capsys):
    code = main(
        [
            "synthesize",
            str(runs[0]),
            "--subject",
            "subj02",
            "--roi",
            "V1v",
            "--against",
            "V1d",
            "--n",
            "1",
            "--steps",
            "2",
            "--out",
            str(tmp_path / "contrast"),
        ]
    )
    assert code == 0 and "page" in capsys.readouterr().out
    page = (tmp_path / "contrast" / "index.html").read_text()
    assert "Images made for V1v - V1d" in page and "No pool was given" in page
    assert len(list((tmp_path / "contrast" / "images").glob("*.png"))) == 1


def test_bad_requests_are_one_line_errors_before_any_work(runs, store, pool, tmp_path):
    def call(**changes):
        args = {"subject": "subj01", "rois": "V1v", "out": tmp_path / "o", **FEW, **changes}
        return be.synthesize(runs, **args)

    with pytest.raises(DataError, match=r"unknown ROI 'V9'; valid names: .*V1v"):
        call(rois="V9")
    with pytest.raises(DataError, match=r"'subj09' is not in this model's group space"):
        call(subject="subj09")
    with pytest.raises(ConfigError, match=r"'n' must be an integer >= 1; got 0"):
        call(n=0)
    with pytest.raises(ConfigError, match=r"'tv' must be >= 0; got -1"):
        call(options={"tv": -1})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['step'\]; valid: .*'steps'"):
        call(options={"step": 3})
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UnsafeOverwriteError, match=r"files brainencoder did not write"):
        call(out=tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(UnsafeOverwriteError, match=r"lies inside the input .*pool\.npy"):
        call(out=pool.parent, pool=pool)
    with pytest.raises(DataError, match=r"a model file does not say where its ROI label files"):
        be.synthesize(
            runs[0] / "best.safetensors", subject="subj01", rois="V1v", out=tmp_path / "f"
        )
    with pytest.raises(SystemExit) as exc:
        main(["synthesize", str(runs[0]), "--subject", "subj01", "--roi", "V1v", "--n", "0"])
    assert exc.value.code == 2


def test_a_ridge_run_is_refused(store, tmp_path):
    from brainencoder.baselines.ridge import FeatureSpec, fit_ridge_baseline

    fit_ridge_baseline(store, tmp_path / "ridge", FeatureSpec(kind="pixels", pca_components=8))
    with pytest.raises(DataError, match=r"not an encoder: synthesize follows the gradient"):
        load_members([tmp_path / "ridge"])


@pytest.mark.slow  # trains the demo's encoder on a small categories dataset (~2 minutes)
def test_images_made_for_v1v_and_against_v1d_beat_the_pools_best_by_the_planted_truth(tmp_path):
    from PIL import Image

    from brainencoder.data.prepare import PrepareOptions, prepare_store
    from brainencoder.data.synthetic import SyntheticConfig, make_synthetic
    from brainencoder.data.synthetic_images import draw_images
    from brainencoder.data.synthetic_oracle import planted_signal

    cfg = SyntheticConfig(n_train=300, n_test=20, n_vertices=600, image_size=128, categories=True)
    data = make_synthetic(tmp_path / "data", cfg)
    store = prepare_store(data, tmp_path / "store", PrepareOptions(image_size=128), progress=False)
    train(load_config("configs/demo.yaml"), store.path, tmp_path / "run")
    images, category = draw_images(np.random.default_rng([0, 2026]), 300, True, 2026)
    pool = (np.stack(images) * 255).round().astype(np.uint8)
    np.save(tmp_path / "pool.npy", pool)
    layout = read_layout(data, ["subj01"])
    # one ROI and one contrast (benchmarks/synthesize.py measures four ROIs and the contrast
    # with the demo's three runs: docs/in-silico.md)
    for rois in (["V1v"], ["V1v", "V1d"]):
        masks = [roi_mask(layout["subj01"], r) for r in rois]

        def planted(pixels, cat=None, masks=masks):
            signal = planted_signal(pixels / 255.0, data, "subj01", category=cat)
            value = signal[:, masks[0]].mean(1)
            return value - signal[:, masks[1]].mean(1) if len(masks) == 2 else value

        out = be.synthesize(
            tmp_path / "run", subject="subj01", rois=rois, n=3, options={"steps": 64},
            pool=tmp_path / "pool.npy", out=tmp_path / "-".join(rois),
        )  # fmt: skip
        table = pd.read_csv(out["table"])
        assert table.kept.any(), table
        top = table.image[table.ensemble_value.where(table.kept).idxmax()]
        made = np.asarray(Image.open(tmp_path / "-".join(rois) / top))[None]
        # the planted truth (the generator's own model of the pixels), not the encoder
        assert planted(made)[0] > planted(pool, category).max(), rois
