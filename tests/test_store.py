import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from brainencoder.data.layout import read_layout
from brainencoder.data.prepare import PrepareOptions, prepare_store
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
    prepare_store(synth_root, out, PrepareOptions(image_size=32), progress=False)
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
    resumed = prepare_store(synth_root, out, PrepareOptions(image_size=32), progress=False)
    np.testing.assert_array_equal(resumed.images, store.images)


def test_prepare_refuses_other_dataset_or_options(synth_root, store, tmp_path):
    with pytest.raises(StoreError, match="already holds a store of other data or options"):
        prepare_store(synth_root, store.path, PrepareOptions(image_size=40))
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "thesis.tex").write_text("precious")
    with pytest.raises(StoreError, match="--overwrite"):
        prepare_store(synth_root, tmp_path / "x")
    assert (tmp_path / "x" / "thesis.tex").exists()
    again = prepare_store(synth_root, store.path, PrepareOptions(image_size=32))  # same: no-op
    assert again.images.shape == store.images.shape


def test_prepare_nan_policy(synth_root, tmp_path):
    root = _copy_data(synth_root, tmp_path)
    path = root / "subj02/training_split/training_fmri/rh_training_fmri.npy"
    data = np.load(path)
    data[4, 0] = np.inf
    np.save(path, data)
    with pytest.raises(DataError, match="rh_training_fmri.npy: NaN or inf at row 4"):
        prepare_store(root, tmp_path / "s", PrepareOptions(image_size=16), progress=False)
    assert not (tmp_path / "s" / "manifest.json").exists()
    s = prepare_store(
        root, tmp_path / "s", PrepareOptions(image_size=16, nan_policy="zero"), overwrite=True
    )
    n_lh = s.subject("subj02").n_vertices["lh"]
    assert s.fmri("subj02")[4, n_lh] == 0 and np.isfinite(s.fmri("subj02")).all()


def test_prepare_float16_and_version_check(synth_root, tmp_path):
    s = prepare_store(
        synth_root, tmp_path / "s", PrepareOptions(image_size=16, fmri_dtype="float16")
    )
    assert s.fmri("subj01").dtype == np.float16
    manifest = json.loads((s.path / "manifest.json").read_text())
    manifest["format_version"] = 99
    (s.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="store format version 99 .* prepare the store again"):
        Store(s.path)
    with pytest.raises(StoreError, match="not a prepared store: run 'brainencoder prepare"):
        Store(tmp_path)
    with pytest.raises(StoreError, match="'fmri_dtype' must be one of"):
        prepare_store(synth_root, tmp_path / "t", PrepareOptions(fmri_dtype="int8"))


def test_prepare_reports_corrupt_image(synth_root, tmp_path):
    root = _copy_data(synth_root, tmp_path)
    png = sorted((root / "subj01/test_split/test_images").iterdir())[1]
    png.write_bytes(b"not a png")
    with pytest.raises(DataError, match=f"{png.name}: cannot decode image"):
        prepare_store(root, tmp_path / "s", PrepareOptions(image_size=16), workers=1)
    assert not (tmp_path / "s" / "manifest.json").exists()


def _children(pid):
    """Pids of the processes whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _running(pid):
    """Whether ``pid`` is a live process (not gone, not a zombie)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_prepare_stops_on_a_bad_image_in_one_line_and_leaves_nothing(synth_root, tmp_path):
    """An undecodable image ends its workers without a traceback of theirs (they do not
    inherit prepare's SIGTERM handler), and the store begun by this prepare is removed."""
    root = _copy_data(synth_root, tmp_path)
    png = sorted((root / "subj01/test_split/test_images").iterdir())[1]
    png.write_bytes(b"not a png")
    out = tmp_path / "s"
    cmd = [sys.executable, "-m", "brainencoder", "prepare", str(root), str(out)]
    proc = subprocess.run(
        [*cmd, "--workers", "2", "--image-size", "32"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"{png.name}: cannot decode image" in errors[0]
    assert "Traceback" not in proc.stderr and "KeyboardInterrupt" not in proc.stderr
    assert not out.exists()


def test_prepare_checks_the_fmri_before_any_image_and_leaves_nothing(synth_root, tmp_path, caplog):
    """fMRI values the store cannot hold stop prepare before it decodes an image; the store
    it began goes (a folder that was there stays, empty); the message names the option
    that helps, and none where none does."""
    import logging

    caplog.set_level(logging.INFO, logger="brainencoder")
    root = _copy_data(synth_root, tmp_path)
    path = root / "subj02/training_split/training_fmri/lh_training_fmri.npy"
    data = np.load(path).astype(np.float64)
    data[3, 2] = 1e39  # beyond float32
    np.save(path, data)
    beyond32 = "row 3 holds float64 values beyond the range of float32 .*no --fmri-dtype holds"
    with pytest.raises(DataError, match=beyond32) as exc:
        prepare_store(root, tmp_path / "s", PrepareOptions(image_size=16), progress=False)
    assert "--fmri-dtype float32" not in str(exc.value)
    assert not (tmp_path / "s").exists()
    data[3, 2] = 1e6  # beyond float16, not float32
    np.save(path, data)
    (tmp_path / "mine").mkdir()
    beyond16 = "beyond the range of float16 .*prepare with --fmri-dtype float32"
    with pytest.raises(DataError, match=beyond16):
        prepare_store(root, tmp_path / "mine", PrepareOptions(image_size=16, fmri_dtype="float16"))
    assert (tmp_path / "mine").is_dir() and not list((tmp_path / "mine").iterdir())
    assert not [r for r in caplog.records if "decoding" in r.getMessage()]
    # float32 holds it
    s = prepare_store(root, tmp_path / "mine", PrepareOptions(image_size=16), progress=False)
    assert s.fmri("subj02")[3, 2] == np.float32(1e6)
    assert [r for r in caplog.records if "decoding" in r.getMessage()]  # the log is seen


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_prepare_survives_sigkill(synth_root, store, tmp_path):
    """SIGKILL prepare mid-run (after seeded random numbers of finished chunks), then finish;
    its decoding worker ends with it (no orphan keeps writing into the store)."""
    out = tmp_path / "killed"
    code = (  # decoding slowed down (2 ms an image) so that the kill finds the worker at work
        "import time; import brainencoder.data.prepare as p; real = p.load_image; "
        "p.load_image = lambda *a: (time.sleep(0.002), real(*a))[1]; "
        f"p.prepare_store({str(synth_root)!r}, {str(out)!r}, "
        "p.PrepareOptions(image_size=32), workers=1)"
    )
    rng = np.random.default_rng(0)
    kills, seen = 0, set()
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wanted = int(rng.integers(1, 3))
        deadline = time.time() + 60
        workers = set()
        while proc.poll() is None and time.time() < deadline:
            workers |= set(_children(proc.pid))
            chunks = out / "chunks"
            if chunks.exists() and len(list(chunks.glob("*.done"))) >= wanted:
                time.sleep(rng.uniform(0, 0.05))
                workers |= set(_children(proc.pid))
                proc.send_signal(signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.005)
        proc.wait()
        seen |= workers
        assert not (out / "manifest.json").exists() or proc.returncode == 0
        end = time.time() + 10
        while any(map(_running, workers)) and time.time() < end:
            time.sleep(0.05)
        orphans = [pid for pid in workers if _running(pid)]
        for pid in orphans:
            os.kill(pid, signal.SIGKILL)
        assert not orphans, f"decoding worker(s) {orphans} outlived the killed prepare"
    assert kills >= 1 and seen, "no kill found a decoding worker"
    final = prepare_store(synth_root, out, PrepareOptions(image_size=32), workers=1, progress=False)
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
        prepare_store(synth_root, tmp_path / "s", PrepareOptions(image_size=32))
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
