import os
import pickle

import numpy as np
import pytest

from brainencoder.util.errors import DataError, UnsafeFileError
from brainencoder.util.fileio import atomic_path, check_free_space, load_mapping, write_json_atomic


def test_load_mapping_reads_numpy_saved_dict(tmp_path):
    path = tmp_path / "mapping_streams.npy"
    np.save(path, {0: "Unknown", 1: "early"}, allow_pickle=True)
    assert load_mapping(path) == {0: "Unknown", 1: "early"}


def test_save_mapping_round_trip(tmp_path):
    from brainencoder.util.fileio import save_mapping

    save_mapping(tmp_path / "m.npy", {0: "Unknown", 7: "hV4"})
    assert load_mapping(tmp_path / "m.npy") == {0: "Unknown", 7: "hV4"}
    assert np.load(tmp_path / "m.npy", allow_pickle=True).item() == {0: "Unknown", 7: "hV4"}
    with pytest.raises(ValueError, match="dict of int -> str"):
        save_mapping(tmp_path / "bad.npy", {"a": 1})


def test_load_mapping_accepts_plain_pickle(tmp_path):
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps({np.int64(3): "V1v"}))
    assert load_mapping(path) == {3: "V1v"}


class _Exploit:
    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.mkdir, (self.sentinel,))


def test_malicious_pickle_is_not_executed(tmp_path):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "mapping_evil.npy"
    np.save(path, np.array(_Exploit(str(sentinel)), dtype=object), allow_pickle=True)
    with pytest.raises(UnsafeFileError, match=r"mapping_evil.npy: refusing to load .*mkdir"):
        load_mapping(path)
    assert not sentinel.exists()


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ([1, 2], "expected a dict of int -> str, got list"),
        ({"a": "b"}, "found entry 'a': 'b'"),
        ({1: 2}, "found entry 1: 2"),
    ],
)
def test_load_mapping_rejects_wrong_content(tmp_path, obj, match):
    path = tmp_path / "m.npy"
    np.save(path, np.array(obj, dtype=object) if isinstance(obj, list) else obj, allow_pickle=True)
    if isinstance(obj, list):
        path.write_bytes(pickle.dumps(obj))
    with pytest.raises(DataError, match=match):
        load_mapping(path)


def test_load_mapping_rejects_numeric_array_and_garbage(tmp_path):
    path = tmp_path / "m.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(DataError, match="found a float64 array"):
        load_mapping(path)
    path.write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="cannot parse mapping file"):
        load_mapping(path)
    with pytest.raises(DataError, match="mapping file not found"):
        load_mapping(tmp_path / "nope.npy")


def test_atomic_path_leaves_target_untouched_on_error(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text().strip().startswith("{")
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
    (tmp_path / ".out.json.abc123.tmp").write_text("left by a killed writer")
    write_json_atomic(target, {"a": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_check_free_space(tmp_path):
    check_free_space(tmp_path / "a" / "b", 1, "x")
    with pytest.raises(Exception, match="not enough disk space for the cache"):
        check_free_space(tmp_path, 2**62, "the cache")
