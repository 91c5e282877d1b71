import shutil

import numpy as np
import pytest

from brainencoder.core.space import GroupSpace
from brainencoder.data.layout import find_subjects, read_layout
from brainencoder.data.synthetic import SyntheticConfig, make_synthetic
from brainencoder.data.validate import validate_dataset
from brainencoder.util.errors import BrainEncoderError, DataError


def test_synthetic_dataset_has_challenge_layout(synth_root):
    layout = read_layout(synth_root)
    assert layout.names == ["subj01", "subj02", "subj03"]
    counts = [len(s.train_images) for s in layout.subjects.values()]
    assert len(set(counts)) == 3
    s1, s3 = layout["subj01"], layout["subj03"]
    assert s1.masks["lh"].shape == (163842,)
    assert s3.n_vertices("lh") < s1.n_vertices("lh")  # the last subject misses vertices
    assert s1.load_fmri("lh").dtype == np.float32
    assert s1.train_images[0].name.startswith("train-0001_nsd-")
    assert s1.load_mapping("prf-visualrois")[1] == "V1v"
    assert set(s1.nsd_train) & set(s3.nsd_train)  # shared images
    space = GroupSpace.from_masks({n: s.masks for n, s in layout.subjects.items()})
    assert space.n_vertices == 2 * s1.n_vertices("lh")
    truth = synth_root / "truth" / "subj03"
    nc = np.load(truth / "lh_noise_ceiling.npy")
    assert nc.shape == (s3.n_vertices("lh"),) and 0 < nc.min() and nc.max() < 1
    assert np.load(truth / "rh_test_fmri.npy").shape == (len(s3.test_images), s3.n_vertices("rh"))


def test_synthetic_is_deterministic_and_carries_signal(tmp_path):
    cfg = SyntheticConfig(n_subjects=1, n_train=40, n_test=10, n_vertices=30, image_size=32)
    a = make_synthetic(tmp_path / "a", cfg)
    b = make_synthetic(tmp_path / "b", cfg)
    for rel in (
        "subj01/training_split/training_fmri/lh_training_fmri.npy",
        "subj01/training_split/training_images/train-0001_nsd-",
    ):
        pa = next(a.glob(rel + "*")) if rel.endswith("-") else a / rel
        pb = b / pa.relative_to(a)
        assert pa.read_bytes() == pb.read_bytes()
    # measured test responses correlate with the noise-free signal as NC predicts
    truth = a / "truth" / "subj01"
    signal, measured = np.load(truth / "lh_test_signal.npy"), np.load(truth / "lh_test_fmri.npy")
    assert signal.std(0).min() > 0 and measured.shape == signal.shape
    with pytest.raises(BrainEncoderError, match="exists and is not empty"):
        make_synthetic(a, cfg)
    with pytest.raises(BrainEncoderError, match="'n_vertices' must be in"):
        make_synthetic(tmp_path / "c", SyntheticConfig(n_vertices=5))


def test_validate_clean_dataset(synth_root):
    report = validate_dataset(synth_root)
    assert report.ok, report.problems
    assert report.problems == []
    table = report.table()
    assert "subj03" in table and "V1v" in table


def _broken_copy(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("truth"))
    return dst


def test_validate_reports_every_problem_by_file(synth_root, tmp_path):
    root = _broken_copy(synth_root, tmp_path / "data")
    s1, s2, s3 = (root / n for n in ("subj01", "subj02", "subj03"))
    fmri = s1 / "training_split/training_fmri/lh_training_fmri.npy"
    fmri.write_bytes(fmri.read_bytes()[:-100])  # truncated
    png = sorted((s2 / "training_split/training_images").iterdir())[3]
    png.write_bytes(png.read_bytes()[:200])  # corrupt PNG
    (s3 / "roi_masks/rh.all-vertices_fsaverage_space.npy").unlink()  # missing mask
    sentinel = tmp_path / "executed"
    evil = s2 / "roi_masks/mapping_streams.npy"
    evil.write_bytes(b"cos\nsystem\n(S'touch " + str(sentinel).encode() + b"'\ntR.")
    (s1 / "training_split/training_images/notes.txt").write_text("x")
    rows = np.load(s2 / "training_split/training_fmri/rh_training_fmri.npy")
    rows[5, 3] = np.nan
    np.save(s2 / "training_split/training_fmri/rh_training_fmri.npy", rows)

    report = validate_dataset(root)
    text = "\n".join(map(str, report.problems))
    assert not report.ok
    assert "lh_training_fmri.npy: cannot read this .npy file" in text
    assert f"{png.name}: cannot decode image" in text
    assert "rh.all-vertices_fsaverage_space.npy: file not found" in text
    assert "mapping_streams.npy: refusing to load this mapping file" in text
    assert "notes.txt: not an image file" in text
    assert "rh_training_fmri.npy: 1 rows hold NaN or inf values (first: row 5)" in text
    assert not sentinel.exists()


def test_validate_shape_mismatches(synth_root, tmp_path):
    root = _broken_copy(synth_root, tmp_path / "data")
    s1 = root / "subj01"
    lh = s1 / "training_split/training_fmri/lh_training_fmri.npy"
    np.save(lh, np.load(lh)[:-1])
    rh = s1 / "training_split/training_fmri/rh_training_fmri.npy"
    np.save(rh, np.load(rh)[:, :-2])
    roi = s1 / "roi_masks/lh.streams_challenge_space.npy"
    np.save(roi, np.load(roi)[:-1])
    text = "\n".join(map(str, validate_dataset(root, check_images=False).problems))
    assert "lh_training_fmri.npy: shape (79, 150) does not match 80 training images x 150" in text
    assert "rh_training_fmri.npy: shape (80, 148) does not match 80 training images x 150" in text
    assert "lh.streams_challenge_space.npy: shape (149,), expected (150,)" in text
    with pytest.raises(DataError, match=r"lh_training_fmri.npy: shape \(79, 150\)"):
        read_layout(root)


def test_validate_missing_and_duplicate_subjects(synth_root, tmp_path):
    with pytest.raises(DataError, match="dataset folder not found"):
        find_subjects(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no subject folders \(subj01"):
        find_subjects(tmp_path / "empty")
    root = _broken_copy(synth_root, tmp_path / "data")
    shutil.rmtree(root / "subj02")
    report = validate_dataset(root, check_images=False)
    assert report.ok and "subjects [2] are missing" in str(report.problems[0])
    shutil.copytree(root / "subj01", root / "subj1")
    with pytest.raises(DataError, match="'subj01' and 'subj1' are the same subject"):
        find_subjects(root)
    with pytest.raises(DataError, match=r"subjects \['subj07'\] not found"):
        read_layout(synth_root, ["subj07"])


def test_validate_notes_grayscale_and_empty_test(synth_root, tmp_path):
    from PIL import Image

    root = _broken_copy(synth_root, tmp_path / "data")
    png = sorted((root / "subj01/training_split/training_images").iterdir())[0]
    Image.open(png).convert("L").save(png)
    for p in (root / "subj02/test_split/test_images").iterdir():
        p.unlink()
    report = validate_dataset(root)
    text = "\n".join(map(str, report.problems))
    assert report.ok
    assert f"WARNING {png}: image mode L converted to RGB" in text
    assert "test_images: no test images; 'submit' needs them" in text
