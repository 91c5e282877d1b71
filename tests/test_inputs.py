"""Inputs that must not be silently wrong: image order, odd files, config files."""

from __future__ import annotations

import os
import shutil

import pytest

from brainencoder.data.layout import read_layout
from brainencoder.data.validate import validate_dataset


def _copy(synth_root, tmp_path):
    return shutil.copytree(synth_root, tmp_path / "data", symlinks=True)


def _train_images(root, subject="subj01"):
    return root / subject / "training_split" / "training_images"


def test_images_pair_with_fmri_rows_by_parsed_index(synth_root, tmp_path):
    """Names without zero padding sort differently as text; rows follow the index."""
    expected = read_layout(synth_root)["subj01"].nsd_train
    data = _copy(synth_root, tmp_path)
    folder = _train_images(data)
    for path in folder.iterdir():
        split, rest = path.name.split("-", 1)
        index, nsd = rest.split("_", 1)
        path.rename(folder / f"{split}-{int(index)}_{nsd}")  # train-1_, train-10_, ...
    assert sorted(p.name for p in folder.iterdir())[0].startswith("train-10_")  # text order
    layout = read_layout(data)
    assert (layout["subj01"].nsd_train == expected).all()
    report = validate_dataset(data, check_images=False)
    assert report.ok, [str(p) for p in report.problems]


def test_gaps_duplicates_and_odd_files_are_problems_by_file(synth_root, tmp_path):
    data = _copy(synth_root, tmp_path)
    folder = _train_images(data)
    names = sorted(p.name for p in folder.iterdir())
    (folder / names[4]).unlink()  # index 5 missing
    shutil.copy(folder / names[0], folder / names[0].replace("train-0001", "train-1"))
    os.mkfifo(folder / "train-9999_nsd-00001.png")
    (folder / "broken.png").symlink_to(folder / "nowhere.png")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    report = validate_dataset(data, check_images=False)
    text = "\n".join(str(p) for p in report.problems)
    assert not report.ok
    assert "missing [5]" in text
    assert "duplicate image index 1" in text
    for name in ("train-9999_nsd-00001.png", "broken.png", "loop.png"):
        assert f"{name}: not a regular file" in text


def test_validate_prints_file_names_that_are_not_utf8(synth_root, tmp_path, capsys):
    """Names read as lone surrogates print with \\xNN escapes, not UnicodeEncodeError."""
    from brainencoder.cli.main import main

    data = _copy(synth_root, tmp_path)
    folder = os.fsencode(_train_images(data))
    first = sorted(os.listdir(folder))[0]
    try:
        os.rename(os.path.join(folder, first), os.path.join(folder, b"caf\xe9.png"))
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    report = validate_dataset(data, check_images=False)
    text = "\n".join(str(p) for p in report.problems)
    assert "caf\\xe9.png: name does not follow" in text
    text.encode("utf-8")  # strict: what validate prints is always encodable
    assert main(["validate", str(data), "--skip-images"]) == 1  # printed through capsys (strict)
    out = capsys.readouterr().out
    assert "training_images/caf\\xe9.png: name does not follow" in out
    assert "problem(s)" in out


def test_yaml_configs_are_bounded_mappings(tmp_path):
    from brainencoder.training.config import load_config
    from brainencoder.util.errors import ConfigError

    bomb = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi")
    )
    (tmp_path / "bomb.yaml").write_text(bomb)
    with pytest.raises(ConfigError, match="aliases are not allowed"):
        load_config(tmp_path / "bomb.yaml")
    (tmp_path / "list.yaml").write_text("- epochs\n- 3\n")
    with pytest.raises(ConfigError, match="expected a mapping of keys in this config file"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "big.yaml").write_text("# " + "x" * (1 << 20))
    with pytest.raises(ConfigError, match="larger than 1 MiB"):
        load_config(tmp_path / "big.yaml")
    (tmp_path / "code.yaml").write_text("epochs: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="invalid config file"):
        load_config(tmp_path / "code.yaml")


def test_fmri_checked_as_stored(synth_root, tmp_path):
    import numpy as np

    from brainencoder.data.prepare import PrepareOptions, prepare_store
    from brainencoder.util.errors import DataError

    data = _copy(synth_root, tmp_path)
    path = data / "subj02" / "training_split" / "training_fmri" / "rh_training_fmri.npy"
    fmri = np.load(path).astype(np.float64)
    fmri[7, 3] = 1e6  # finite in float32 and float64, inf in float16
    np.save(path, fmri)
    with pytest.raises(
        DataError, match=r"rh_training_fmri.npy: row 7 holds float64 values beyond .*float16"
    ):
        prepare_store(
            data,
            tmp_path / "s16",
            PrepareOptions(image_size=32, fmri_dtype="float16"),
            progress=False,
        )
    assert not (tmp_path / "s16" / "manifest.json").exists()
    store = prepare_store(data, tmp_path / "s32", PrepareOptions(image_size=32), progress=False)
    assert store.read_fmri("subj02", np.array([7]))[0].max() == 1e6
    np.save(path, fmri.astype(str))
    report = validate_dataset(data, check_images=False)
    assert any("rh_training_fmri.npy: holds <U" in str(p) for p in report.problems)


def test_every_image_mode_decodes_faithfully_or_is_refused(tmp_path):
    import numpy as np
    from PIL import Image

    from brainencoder.data.images import load_image
    from brainencoder.util.errors import DataError

    gray = np.tile(np.linspace(0, 1, 16), (16, 1))  # a horizontal ramp, black to white
    expect = np.rint(gray * 255)
    cases = {
        "l.png": Image.fromarray(np.rint(gray * 255).astype(np.uint8), "L"),
        "i16.png": Image.fromarray(np.rint(gray * 65535).astype(np.uint16)),
        "f.tiff": Image.fromarray(gray.astype(np.float32)),
        "p.png": Image.fromarray(np.rint(gray * 255).astype(np.uint8), "L").convert("P"),
        "la.png": Image.fromarray(np.rint(gray * 255).astype(np.uint8), "L").convert("LA"),
    }
    for name, img in cases.items():
        img.save(tmp_path / name)
        out = load_image(tmp_path / name).astype(float)
        assert out.shape == (16, 16, 3), name
        np.testing.assert_allclose(out[..., 0], expect, atol=1.5, err_msg=name)
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200  # red, fully transparent: white on the white background
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    assert (load_image(tmp_path / "clear.png") == 255).all()
    Image.fromarray(np.full((4, 4), 300.0, np.float32)).save(tmp_path / "hot.tiff")
    with pytest.raises(DataError, match=r"hot.tiff: float image with values in \[300, 300\]"):
        load_image(tmp_path / "hot.tiff")
    photo = np.zeros((8, 16, 3), np.uint8)
    photo[:, :8] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(photo).save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=100)
    shown = load_image(tmp_path / "rot.jpg")
    assert shown.shape == (16, 8, 3) and shown[:8].mean() > 200 and shown[8:].mean() < 50


def test_large_jpeg_decodes_with_bounded_memory_and_bombs_are_refused(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    from brainencoder.data.images import load_image
    from brainencoder.util.errors import DataError

    Image.fromarray(np.zeros((2000, 2000, 3), np.uint8)).save(tmp_path / "big.jpg")
    from PIL import JpegImagePlugin

    seen = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = original(self, mode, size)
        seen.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    assert load_image(tmp_path / "big.jpg", 64).shape == (64, 64, 3)
    assert seen and max(seen[0]) <= 2000 // 8  # decoded at 1/8 scale, not 2000 x 2000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DataError, match="big.jpg: image too large to decode safely"):
        load_image(tmp_path / "big.jpg")
    from brainencoder.data.problems import check_image

    problem = check_image(tmp_path / "big.jpg")  # validate: one problem, the scan goes on
    assert problem.blocking and "image too large to decode safely" in problem.message


@pytest.mark.numerics
def test_model_file_predicts_each_image_alone(store, tmp_path):
    import numpy as np
    from PIL import Image

    from brainencoder.inference.images import predict_images
    from brainencoder.models.encoder import create_encoder
    from brainencoder.models.modelfile import save_encoder
    from brainencoder.runs.load import load_model

    enc = create_encoder("tiny", store.space, img_size=32, readout={"latent_dim": 8})
    save_encoder(enc, tmp_path / "m.safetensors")  # no store size recorded
    model = load_model(tmp_path / "m.safetensors")
    rng = np.random.default_rng(0)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(rng.integers(0, 255, (90, 60, 3), dtype=np.uint8)).save(a)
    Image.fromarray(rng.integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(b)
    together = predict_images(model, [a, b], "subj01")
    alone = predict_images(model, [b], "subj01")
    np.testing.assert_allclose(together["lh"][1], alone["lh"][0], rtol=1e-5, atol=1e-6)


def test_evaluate_refuses_another_store_and_names_a_moved_one(store, synth_root, tmp_path):
    from brainencoder.data.prepare import PrepareOptions, prepare_store
    from brainencoder.evaluation.evaluate import evaluate_run
    from brainencoder.training.config import load_config
    from brainencoder.training.loop import train
    from brainencoder.util.errors import CheckpointError

    own = prepare_store(synth_root, tmp_path / "own", PrepareOptions(image_size=32), progress=False)
    fast = [
        "model.img_size=32",
        "model.readout.latent_dim=4",
        "model.readout.hidden_dim=8",
        "epochs=1",
        "batch_size=32",
    ]
    train(load_config(None, fast), own.path, tmp_path / "run")
    other = prepare_store(
        synth_root, tmp_path / "other", PrepareOptions(image_size=32, split_seed=1), progress=False
    )
    with pytest.raises(CheckpointError, match=r"is not the store .* \(other splits\)"):
        evaluate_run(tmp_path / "run", "val", other)
    assert len(evaluate_run(tmp_path / "run", "val", own))
    shutil.move(own.path, tmp_path / "moved")
    with pytest.raises(CheckpointError, match="is gone .*; pass --store NEW_PATH"):
        evaluate_run(tmp_path / "run", "val")
    assert len(evaluate_run(tmp_path / "run", "val", tmp_path / "moved"))


def test_non_positive_numbers_are_refused_by_name(capsys):
    from brainencoder.cli.main import main

    for argv, match in [
        (
            ["prepare", "d", "s", "--workers", "0"],
            "argument --workers: expected a positive integer",
        ),
        (["prepare", "d", "s", "--image-size", "-4"], "argument --image-size: expected a positive"),
        (["synth", "d", "--subjects", "0"], "argument --subjects: expected a positive integer"),
        (
            ["predict", "r", "i", "--subject", "subj01", "--out", "p.npz", "--batch-size", "0"],
            "argument --batch-size: expected a positive integer",
        ),
        (["pca", "s", "--out", "p", "--seed", "-1"], "argument --seed: expected an integer >= 0"),
        (
            ["submit", "r", "--data", "d", "--out", "s.zip", "--workers", "-2"],
            "argument --workers: expected an integer >= 0",
        ),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2 and match in capsys.readouterr().err


def test_trunk_kwargs_decided_once_without_log_noise(caplog, store):
    """resnet18 takes no img_size: the trunk decides once (one DEBUG record) to leave it
    out, and says nothing at INFO or above."""
    import logging

    from brainencoder.models.encoder import create_encoder

    with caplog.at_level(logging.DEBUG, logger="brainencoder"):
        create_encoder("tiny", store.space, img_size=32, readout={"latent_dim": 8})
    decided = [r for r in caplog.records if "does not accept 'img_size'" in r.getMessage()]
    assert len(decided) == 1, [r.getMessage() for r in decided]
    assert decided[0].levelno == logging.DEBUG and decided[0].name == "brainencoder.models.trunk"
    assert not [
        r for r in caplog.records if r.levelno >= logging.INFO and "accept" in r.getMessage()
    ]


def test_two_spellings_of_a_store_share_one_feature_cache(store, tmp_path):
    import numpy as np
    import torch

    from brainencoder.data.store import Store
    from brainencoder.inference.cache import build_feature_cache
    from brainencoder.models.encoder import create_encoder

    torch.manual_seed(0)
    model = create_encoder("tiny", store.space, img_size=32, readout={"latent_dim": 8})
    other = Store(store.path.parent / ".." / store.path.parent.name / store.path.name)
    a = build_feature_cache(model, store, np.arange(4), root=tmp_path / "c")
    b = build_feature_cache(model, other, np.arange(4), root=tmp_path / "c")
    assert a.path == b.path and len(list((tmp_path / "c").iterdir())) == 1
