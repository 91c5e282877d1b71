"""Images as others send them: float and 32-bit images by one stated rule, tensors, batch sizes.

Float images (mode F files and images, float arrays, float tensors) hold
values in [0, 1], clipped within [-0.2, 1.2] and refused beyond; mode I holds
16-bit values or is refused; never a scale guessed from the image's maximum.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

import brainencoder as be
from brainencoder.data.images import describe_mode, float_to_uint8, load_image, to_rgb
from brainencoder.util.errors import ConfigError, DataError

GRAY = np.tile(np.linspace(0, 1, 16), (16, 1))  # a horizontal ramp, black to white
RAMP = np.repeat(np.rint(GRAY * 255).astype(np.uint8)[..., None], 3, axis=2)


@pytest.fixture(scope="module")
def model(store, tmp_path_factory):
    """An untrained tiny encoder of the store's subjects, loaded from its model file."""
    from brainencoder.models.encoder import create_encoder
    from brainencoder.models.modelfile import save_encoder

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("untrusted") / "m.safetensors"
    save_encoder(create_encoder("tiny", store.space, img_size=32, readout={"latent_dim": 8}), path)
    return be.load(path)


def test_float_images_hold_values_in_0_1_clipped_within_a_stated_tolerance(tmp_path):
    overshoot = GRAY.astype(np.float32)
    overshoot[:, -1] = 1.0001  # bicubic resampling overshoot at the white edge
    overshoot[:, 0] = -0.15
    Image.fromarray(overshoot).save(tmp_path / "overshoot.tiff")
    np.testing.assert_array_equal(load_image(tmp_path / "overshoot.tiff"), RAMP)
    edge = np.array([-0.2, 0.0, 0.5, 1.2], np.float32)
    np.testing.assert_array_equal(float_to_uint8(edge, "edge"), [0, 0, 128, 255])
    dark = (GRAY * 200).astype(np.float32)  # a 0-255 float image: refused, not guessed
    Image.fromarray(dark).save(tmp_path / "dark.tiff")
    with pytest.raises(
        DataError,
        match=r"dark.tiff: float image with values in \[0, 200\]; float images must hold "
        r"values in \[0, 1\]: scale it to \[0, 1\] or give uint8 \(0-255\)$",
    ):
        load_image(tmp_path / "dark.tiff")
    with pytest.raises(DataError, match=r"image 2: float image with values in \[-1, 1\];"):
        to_rgb(Image.fromarray((GRAY * 2 - 1).astype(np.float32)), "image 2")  # normalized
    with pytest.raises(DataError, match=r"x: float image with values in \[0, 1.21\];"):
        float_to_uint8(np.array([0.0, 1.21]), "x")
    nan = GRAY.astype(np.float32)
    nan[3, 3] = np.nan
    with pytest.raises(DataError, match="image 0: float image holds NaN or inf; replace them"):
        to_rgb(Image.fromarray(nan), "image 0")
    assert describe_mode("F") == "F (float) scaled from [0, 1] to 8 bits"


def test_mode_I_images_hold_16_bit_values_or_are_refused(tmp_path):
    sixteen = np.rint(GRAY * 65535).astype(np.int32)
    Image.fromarray(sixteen).save(tmp_path / "i32.tiff")
    Image.fromarray(sixteen.astype(np.uint16)).save(tmp_path / "i16.png")
    assert Image.open(tmp_path / "i32.tiff").mode == "I"
    np.testing.assert_array_equal(load_image(tmp_path / "i32.tiff"), RAMP)
    np.testing.assert_array_equal(load_image(tmp_path / "i16.png"), RAMP)  # as before
    eight = Image.fromarray(RAMP[..., 0]).convert("I")  # 8-bit values in a 32-bit image
    eight.save(tmp_path / "i8.tiff")
    with pytest.raises(
        DataError,
        match=r"i8.tiff: image mode I with values in \[0, 255\] may be 8-bit or 16-bit; "
        r"convert it to mode L \(8-bit\) or I;16 \(16-bit\)$",
    ):
        load_image(tmp_path / "i8.tiff")
    with pytest.raises(DataError, match=r"image 1: image mode I with values in \[0, 255\]"):
        to_rgb(eight, "image 1")
    wide = Image.fromarray(np.full((4, 4), 70000, np.int32))
    with pytest.raises(DataError, match=r"w: image mode I with values up to 70000, beyond 16"):
        to_rgb(wide, "w")
    black = to_rgb(Image.fromarray(np.zeros((4, 4), np.int32)), "b")  # both readings agree
    assert (np.asarray(black) == 0).all()
    assert describe_mode("I") == "I (32-bit integers) read as 16-bit values and scaled to 8 bits"


def test_float_arrays_tensors_pil_and_files_predict_the_same(model, tmp_path):
    from brainencoder.cli.main import main

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    rgb[0, 0] = 255
    rgb_float = rgb / 255.0
    rgb_float[0, 0] = 1.0001  # overshoot: clipped
    gray = rng.random((20, 24)).astype(np.float32)
    gray[0, 0] = 1.0001
    gray3 = np.repeat(gray[..., None], 3, axis=2)
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(rgb).save(folder / "a.png")
    Image.fromarray(gray, "F").save(folder / "b.tiff")  # a float file
    reference = model.predict(folder, "subj01")
    assert main(["predict", str(model.path), str(folder), "--subject", "subj01",
                 "--out", str(tmp_path / "p.npz")]) == 0  # fmt: skip
    with np.load(tmp_path / "p.npz") as cli:
        for h in ("lh", "rh"):
            np.testing.assert_array_equal(cli[h], reference[h])
    batch = np.stack([rgb_float, gray3])
    forms = {
        "float64 batch": batch,
        "float32 list": [rgb_float.astype(np.float32), gray3],
        "uint8 batch": np.stack([rgb, float_to_uint8(gray3, "gray")]),
        "PIL RGB and F": [Image.fromarray(rgb), Image.fromarray(gray, "F")],
        "float tensor": torch.from_numpy(batch).float().requires_grad_(),
        "float16 tensor list": [torch.from_numpy(rgb_float).half(), torch.from_numpy(gray3)],
        "uint8 tensor": torch.from_numpy(np.stack([rgb, float_to_uint8(gray3, "gray")])),
    }
    for name, images in forms.items():
        pred = model.predict(images, "subj01")
        for h in ("lh", "rh"):
            np.testing.assert_array_equal(pred[h], reference[h], err_msg=name)
    one = model.predict(torch.from_numpy(rgb_float), "subj01")  # one image (H, W, 3)
    np.testing.assert_array_equal(one.lh, model.predict(folder / "a.png", "subj01").lh)


def test_tensors_and_float_arrays_that_cannot_be_read_are_refused_by_name(model):
    with pytest.raises(
        DataError,
        match=r"^images: image tensors must be \(n, height, width, 3\) or \(height, width, 3\), "
        r"uint8 or float in \[0, 1\]; got float32 \(2, 3, 8, 8\) "
        r"\(channels first\? use tensor\.permute\(0, 2, 3, 1\)\)$",
    ):
        model.predict(torch.rand(2, 3, 8, 8), "subj01")
    with pytest.raises(DataError, match=r"image 0: .* \(channels first\? use tensor\.permute\(1,"):
        model.predict([torch.rand(3, 8, 8)], "subj01")
    with pytest.raises(DataError, match=r"image 1: .* \(channels first\? use array\.transpose\(1,"):
        model.predict([np.zeros((8, 8, 3), np.uint8), np.zeros((3, 8, 8))], "subj01")
    hot = torch.rand(2, 8, 8, 3)
    hot[1] *= 255  # a 0-255 float image
    with pytest.raises(
        DataError, match=r"^image 1: float image with values in \[.*\]; .*scale it to \[0, 1\] or"
    ):
        model.predict(hot, "subj01")
    with pytest.raises(DataError, match=r"^image 0: float image holds NaN or inf"):
        model.predict(torch.full((8, 8, 3), float("nan")), "subj01")
    with pytest.raises(DataError, match="no images to predict"):
        model.predict(torch.zeros(0, 8, 8, 3), "subj01")


def test_batch_size_must_be_a_positive_integer(model, tmp_path):
    from brainencoder.data.sources import as_image_source
    from brainencoder.inference.images import predict_images, predict_to_npy

    images = np.zeros((3, 8, 8, 3), np.uint8)
    source = as_image_source(images)
    for bad in (0, -1, 2.5, True, "8", None):
        message = rf"^'batch_size' must be a positive integer; got {re.escape(repr(bad))}: pass"
        with pytest.raises(ConfigError, match=message):
            model.predict(images, "subj01", batch_size=bad)
        with pytest.raises(ConfigError, match=message):
            predict_images(model.model, source, "subj01", batch_size=bad)
        with pytest.raises(ConfigError, match=message):
            predict_to_npy(model.model, source, "subj01", tmp_path / "p", batch_size=bad)
    assert not list(tmp_path.iterdir())  # refused before any file
    pred = model.predict(images, "subj01", batch_size=np.int64(2))  # a numpy integer is one
    np.testing.assert_array_equal(pred.lh, model.predict(images, "subj01", batch_size=2).lh)
