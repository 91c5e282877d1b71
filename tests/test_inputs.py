"""Inputs that must not be silently wrong: image order, odd files, config files."""

from __future__ import annotations

import os
import shutil

import pytest

from brainencoder.data.layout import read_layout, validate_dataset


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


def test_yaml_configs_are_bounded_mappings(tmp_path):
    from brainencoder.errors import ConfigError
    from brainencoder.train.config import load_config

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

    from brainencoder.data.store import prepare_store
    from brainencoder.errors import DataError

    data = _copy(synth_root, tmp_path)
    path = data / "subj02" / "training_split" / "training_fmri" / "rh_training_fmri.npy"
    fmri = np.load(path).astype(np.float64)
    fmri[7, 3] = 1e6  # finite in float32 and float64, inf in float16
    np.save(path, fmri)
    with pytest.raises(
        DataError, match=r"rh_training_fmri.npy: row 7 holds values beyond .*float16"
    ):
        prepare_store(data, tmp_path / "s16", image_size=32, fmri_dtype="float16", progress=False)
    assert not (tmp_path / "s16" / "manifest.json").exists()
    store = prepare_store(data, tmp_path / "s32", image_size=32, progress=False)
    assert store.read_fmri("subj02", np.array([7]))[0].max() == 1e6
    np.save(path, fmri.astype(str))
    report = validate_dataset(data, check_images=False)
    assert any("rh_training_fmri.npy: holds <U" in str(p) for p in report.problems)
