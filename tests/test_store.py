import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from brainencoder.data.layout import read_layout
from brainencoder.data.prepare import prepare_store
from brainencoder.data.store import Store
from brainencoder.util.errors import DataError, StoreError


def test_store_contents_match_source(synth_root, store):
    layout = read_layout(synth_root)
    assert store.names == layout.names
    assert store.images.dtype == np.uint8 and store.images.shape[1:] == (32, 32, 3)
    n_unique = len({int(n) for s in layout.subjects.values() for n in [*s.nsd_train, *s.nsd_test]})
    assert store.images.shape[0] == n_unique  # shared images decoded once
    s3 = layout["subj03"]
    fmri = store.fmri("subj03")
    expected = np.concatenate([s3.load_fmri("lh"), s3.load_fmri("rh")], axis=1)
    np.testing.assert_array_equal(fmri, expected)
    info = store.subject("subj03")
    assert np.array_equal(store.nsd_ids[info.train_rows], s3.nsd_train)
    from brainencoder.data.images import load_image

    np.testing.assert_array_equal(
        store.images[info.test_rows[2]], load_image(s3.test_images[2], 32)
    )
    assert sum(len(v) for v in info.splits.values()) == info.n_train
    assert "subj03" in store.summary()
    with pytest.raises(StoreError, match="subject 'subj09' is not in store"):
        store.subject("subj09")


def _copy_data(synth_root, tmp_path):
    return shutil.copytree(synth_root, tmp_path / "data", ignore=shutil.ignore_patterns("truth"))


def test_prepare_resumes_after_partial_work(synth_root, store, tmp_path):
    out = tmp_path / "s"
    prepare_store(synth_root, out, image_size=32, progress=False)
    # simulate a kill: manifest not yet written, some chunks unfinished and garbage
    (out / "manifest.json").unlink()
    (out / "chunks").mkdir()
    n = Store(store.path).images.shape[0]
    for start in range(0, n, 64):
        if start != 64:
            (out / "chunks" / f"{start:08d}.done").touch()
    mm = np.memmap(out / "images.u8", dtype=np.uint8, mode="r+", shape=(n, 32, 32, 3))
    mm[64:128] = 7
    mm.flush()
    del mm
    with pytest.raises(StoreError, match="incomplete .* run 'brainencoder prepare' again"):
        Store(out)
    resumed = prepare_store(synth_root, out, image_size=32, progress=False)
    np.testing.assert_array_equal(resumed.images, store.images)


def test_prepare_refuses_other_dataset_or_options(synth_root, store, tmp_path):
    with pytest.raises(StoreError, match="already holds a store of other data or options"):
        prepare_store(synth_root, store.path, image_size=40)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "thesis.tex").write_text("precious")
    with pytest.raises(StoreError, match="--overwrite"):
        prepare_store(synth_root, tmp_path / "x")
    assert (tmp_path / "x" / "thesis.tex").exists()
    again = prepare_store(synth_root, store.path, image_size=32)  # same: no-op
    assert again.images.shape == store.images.shape


def test_prepare_nan_policy(synth_root, tmp_path):
    root = _copy_data(synth_root, tmp_path)
    path = root / "subj02/training_split/training_fmri/rh_training_fmri.npy"
    data = np.load(path)
    data[4, 0] = np.inf
    np.save(path, data)
    with pytest.raises(DataError, match="rh_training_fmri.npy: NaN or inf at row 4"):
        prepare_store(root, tmp_path / "s", image_size=16, progress=False)
    assert not (tmp_path / "s" / "manifest.json").exists()
    s = prepare_store(root, tmp_path / "s", image_size=16, nan_policy="zero", overwrite=True)
    n_lh = s.subject("subj02").n_vertices["lh"]
    assert s.fmri("subj02")[4, n_lh] == 0 and np.isfinite(s.fmri("subj02")).all()


def test_prepare_float16_and_version_check(synth_root, tmp_path):
    s = prepare_store(synth_root, tmp_path / "s", image_size=16, fmri_dtype="float16")
    assert s.fmri("subj01").dtype == np.float16
    manifest = json.loads((s.path / "manifest.json").read_text())
    manifest["format_version"] = 99
    (s.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="store format version 99 .* prepare the store again"):
        Store(s.path)
    with pytest.raises(StoreError, match="not a prepared store: run 'brainencoder prepare"):
        Store(tmp_path)
    with pytest.raises(StoreError, match="'fmri_dtype' must be one of"):
        prepare_store(synth_root, tmp_path / "t", fmri_dtype="int8")


def test_prepare_reports_corrupt_image(synth_root, tmp_path):
    root = _copy_data(synth_root, tmp_path)
    png = sorted((root / "subj01/test_split/test_images").iterdir())[1]
    png.write_bytes(b"not a png")
    with pytest.raises(DataError, match=f"{png.name}: cannot decode image"):
        prepare_store(root, tmp_path / "s", image_size=16, workers=1)
    assert not (tmp_path / "s" / "manifest.json").exists()


def test_prepare_survives_sigkill(synth_root, store, tmp_path):
    """SIGKILL prepare mid-run (after seeded random numbers of finished chunks), then finish."""
    out = tmp_path / "killed"
    code = (
        "from brainencoder.data.prepare import prepare_store; "
        f"prepare_store({str(synth_root)!r}, {str(out)!r}, image_size=32, workers=1)"
    )
    rng = np.random.default_rng(0)
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wanted = int(rng.integers(1, 3))
        deadline = time.time() + 60
        while proc.poll() is None and time.time() < deadline:
            chunks = out / "chunks"
            if chunks.exists() and len(list(chunks.glob("*.done"))) >= wanted:
                time.sleep(rng.uniform(0, 0.05))
                proc.send_signal(signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.005)
        proc.wait()
        assert not (out / "manifest.json").exists() or proc.returncode == 0
    assert kills >= 1
    final = prepare_store(synth_root, out, image_size=32, workers=1, progress=False)
    np.testing.assert_array_equal(final.images, store.images)
    for name in store.names:
        np.testing.assert_array_equal(final.fmri(name), store.fmri(name))


def test_manifest_paths_cannot_escape(store, tmp_path):
    copy = shutil.copytree(store.path, tmp_path / "s")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["subjects"]["subj01"]["fmri"] = "../../../etc/passwd"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="manifest points outside the store"):
        Store(copy).fmri("subj01")


def test_prepare_checks_disk_space_up_front(synth_root, tmp_path, monkeypatch):
    import collections

    import brainencoder.util.fileio as fileio

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda p: usage(10**9, 10**9, 1000))
    with pytest.raises(Exception, match="not enough disk space for the prepared store"):
        prepare_store(synth_root, tmp_path / "s", image_size=32)
    assert not (tmp_path / "s" / "images.u8").exists()


def test_row_reader_matches_memmap_and_detects_truncation(store, tmp_path):
    rows = np.array([5, 3, 4, 30, 7, 7, 0])
    np.testing.assert_array_equal(store.read_images(rows), store.images[rows])
    np.testing.assert_array_equal(
        store.read_fmri("subj02", rows), np.asarray(store.fmri("subj02"))[rows]
    )
    assert store.read_fmri("subj01", np.array([], dtype=np.int64)).shape[0] == 0
    from brainencoder.data.store import RowReader

    path = tmp_path / "a.bin"
    np.arange(20, dtype=np.float32).tofile(path)
    reader = RowReader(path, 0, (10, 2), np.float32)
    np.testing.assert_array_equal(reader(np.array([9, 0])), [[18, 19], [0, 1]])
    with pytest.raises(IndexError, match="rows out of range"):
        reader(np.array([10]))
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(StoreError, match="short read; the file is truncated"):
        RowReader(path, 0, (10, 2), np.float32)(np.array([9]))
