"""Untrusted inputs of issue 29: HDF5 chunks, a W&B without login, preset names, ensembles.

- an HDF5 image dataset compressed in chunks that would decompress far more than
  one image per image read is refused, naming the file, the dataset and the
  ``h5repack`` command that rewrites it; chunks of several images are read once;
- ``wandb: true`` online without a login stops before the run folder is made;
- a file or folder named like a packaged config never hides it;
- an ensemble of runs trained on stores of two image sizes says so.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import brainencoder as be
from brainencoder.data.hdf5 import MAX_ROW_BLOCK_BYTES
from brainencoder.data.sources import ImageArray, open_images
from brainencoder.runs.ensemble import EnsembleModel
from brainencoder.training.config import load_config, resolve_config
from brainencoder.training.loop import train
from brainencoder.training.tracking import require_trackers
from brainencoder.util.errors import ConfigError, DataError
from conftest import TINY_TRAIN

h5py = pytest.importorskip("h5py")

# --------------------------------------------------------------------------- HDF5 chunks


@pytest.mark.parametrize(
    ("shape", "maxshape", "chunks", "decompressed"),
    [
        # the file: every image in one gzip chunk (a tiny file: nothing written)
        ((400, 256, 256, 3), None, (400, 256, 256, 3), "75.0 MiB"),
        # one image per chunk, but chunks far larger than the images (a resizable dataset)
        ((2, 8, 8, 3), (None, None, None, 3), (1, 8192, 8192, 3), "192.0 MiB"),
    ],
)
def test_an_hdf5_dataset_whose_chunks_decompress_too_much_per_image_is_refused(
    tmp_path, shape, maxshape, chunks, decompressed
):
    path = tmp_path / "stimuli.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "imgBrick", shape, np.uint8, maxshape=maxshape, chunks=chunks, compression="gzip"
        )
    assert path.stat().st_size < 100_000
    layout = "x".join(map(str, (1, *shape[1:])))
    message = (
        rf"^{re.escape(str(path))}: dataset 'imgBrick' is compressed in chunks of "
        rf"{' x '.join(map(str, chunks))} \(gzip\), so reading one image would decompress "
        rf"{decompressed} \(at most 64.0 MiB is allowed\); rewrite it in chunks of one image: "
        rf"h5repack -l imgBrick:CHUNK={layout} {re.escape(str(path))} NEW.h5$"
    )
    with pytest.raises(DataError, match=message) as error:
        open_images(path)
    assert "\n" not in str(error.value)
    with pytest.raises(DataError, match=message):  # the dataset named, as --dataset does
        ImageArray(path, "imgBrick")


def test_chunks_of_several_images_are_decompressed_once_for_all_their_images(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (128, 200, 200, 3), dtype=np.uint8)
    path = tmp_path / "stimuli.h5"
    chunks = (64, 100, 100, 3)  # a row block of 7.7 MB: within the limit
    with h5py.File(path, "w") as f:
        f.create_dataset("imgBrick", data=pixels, chunks=chunks, compression="gzip")
    block = 64 * 200 * 200 * 3
    assert block < MAX_ROW_BLOCK_BYTES
    with ImageArray(path, rows=slice(3, 128)) as images:
        _, slots, nbytes, _ = images._file.id.get_access_plist().get_cache()
        # the chunk cache holds two row blocks (h5py's default, 1 or 8 MiB, holds none):
        # reading the images in order decompresses each chunk once
        assert nbytes >= 2 * block and slots >= 2 * 4
        for index in (0, 1, 60, 61, 124):
            np.testing.assert_array_equal(images.load(index), pixels[3 + index])


def test_a_damaged_hdf5_chunk_is_a_one_line_error_naming_the_file_and_row(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    path = tmp_path / "stimuli.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("imgBrick", data=pixels, chunks=(1, 32, 32, 3), compression="gzip")
        info = f["imgBrick"].id.get_chunk_info(2)  # row 2's chunk
    with path.open("r+b") as f:
        f.seek(info.byte_offset)
        f.write(b"\xff" * info.size)
    with ImageArray(path) as images:
        np.testing.assert_array_equal(images.load(1), pixels[1])
        message = rf"^{re.escape(str(path))}: cannot read image row 2 \(.*\); the file may be "
        with pytest.raises(DataError, match=message + "damaged: write it again$"):
            images.load(2)


# --------------------------------------------------------------------------- W&B login


def _wandb_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A machine of no W&B login: empty home, netrc and settings; a fresh wandb session."""
    from wandb.sdk import wandb_setup
    from wandb.sdk.lib.wbauth import authenticate

    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(home / ".netrc"))
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(home / "wandb"))
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    # wandb reads its settings once per process: start each case afresh, restored after
    monkeypatch.setattr(wandb_setup, "_singleton", None)
    monkeypatch.setattr(authenticate, "_session_auth", None)
    return home


def test_wandb_without_a_login_is_a_one_line_error_before_the_run_folder(
    store, tmp_path, monkeypatch
):
    pytest.importorskip("wandb")
    home = _wandb_home(tmp_path, monkeypatch)
    cfg = load_config(None, [*TINY_TRAIN, f"cache_dir={tmp_path / 'cache'}", "wandb=true"])
    message = (
        r"^'wandb: true' needs a W&B login and this machine has none \(no WANDB_API_KEY, no "
        r"'wandb login'\): run 'wandb login' or set WANDB_API_KEY, or set WANDB_MODE=offline "
        r"to keep the W&B run in the run folder$"
    )
    with pytest.raises(ConfigError, match=message):  # never wandb's prompt or UsageError
        train(cfg, store.path, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # so the corrected command needs no --overwrite

    # what wandb.init would use instead of a prompt passes, with no network
    key = "0123456789abcdef" * 2 + "01234567"
    monkeypatch.setenv("WANDB_API_KEY", key)
    require_trackers(cfg)
    monkeypatch.delenv("WANDB_API_KEY")
    for mode in ("offline", "disabled"):
        _wandb_home(tmp_path, monkeypatch)
        monkeypatch.setenv("WANDB_MODE", mode)
        require_trackers(cfg)
    _wandb_home(tmp_path, monkeypatch)
    (home / ".netrc").write_text(f"machine api.wandb.ai\n  login user\n  password {key}\n")
    (home / ".netrc").chmod(0o600)
    require_trackers(cfg)
    _wandb_home(tmp_path, monkeypatch)
    (home / ".netrc").unlink()
    with pytest.raises(ConfigError, match=message):
        require_trackers(cfg)


# --------------------------------------------------------------------------- config names


def test_a_folder_or_file_named_like_a_packaged_config_never_hides_it(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()  # e.g. a demo's output folder
    (tmp_path / "phase1").write_text("epochs: 1\n")
    packaged = Path(be.__file__).parent / "configs"
    assert resolve_config("demo") == packaged / "demo.yaml"
    assert resolve_config("phase1") == packaged / "phase1.yaml"
    # the packaged demo is read (an unknown key is reported only once the config is read)
    with pytest.raises(ConfigError, match=r"^unknown key\(s\) \['lrr'\]"):
        be.train("demo", store=store.path, out=tmp_path / "run", overrides={"lrr": 1})
    assert not (tmp_path / "run").exists()

    # a path is a path: a folder is refused, a file read, a missing one named
    with pytest.raises(ConfigError, match=r"^demo: is a folder, not a config file; pass a YAML "):
        resolve_config("./demo")
    assert resolve_config("./phase1") == Path("phase1")
    with pytest.raises(
        ConfigError, match=r"^phase2.yaml: config file not found \(the packaged config is named "
    ):
        resolve_config("phase2.yaml")
    (tmp_path / "mine").write_text("epochs: 1\n")
    with pytest.raises(
        ConfigError, match=r"^config 'mine' is not a packaged config \(\[.*'demo'.*\]\); pass "
    ):
        resolve_config("mine")
    assert load_config(resolve_config("./mine")).epochs == 1


# --------------------------------------------------------------------------- ensembles


def _member(size: int | None) -> SimpleNamespace:
    """A model as an ensemble sees it: its vertex space and its store's image size."""
    space = SimpleNamespace(subjects=["subj01"], same_as=lambda other: True)
    return SimpleNamespace(space=space, store_image_size=size)


def test_an_ensemble_of_stores_of_two_image_sizes_names_both_runs_and_sizes():
    same = EnsembleModel([_member(32), _member(32)], "ensemble(a+b)")
    assert same.store_image_size == 32
    members = [_member(32), _member(32), _member(48)]
    message = (
        r"^ensemble\(p1\+p1-seed2\+big\): its members were trained on stores of different "
        r"image sizes \(p1: 32 px, big: 48 px\), so they cannot predict from the same decoded "
        r"images; ensemble runs trained on one store$"
    )
    with pytest.raises(DataError, match=message):
        EnsembleModel(members, "ensemble(p1+p1-seed2+big)")
    with pytest.raises(DataError, match=r"\(model 1: 32 px, model 3: 48 px\)"):
        EnsembleModel(members, "best")
    with pytest.raises(DataError, match=r"\(x: 32 px, z: 48 px\)"):
        EnsembleModel(members, "best", labels=["x", "y", "z"])
