import numpy as np
import pytest

from brainencoder.core.space import GroupSpace
from brainencoder.data.splits import make_splits
from brainencoder.util.errors import ConfigError, DataError


def _masks():
    a = {"lh": np.array([1, 1, 0, 1, 0]), "rh": np.array([0, 1, 1, 0, 0])}
    b = {"lh": np.array([0, 1, 1, 1, 0]), "rh": np.array([0, 1, 0, 0, 1])}
    return {"subj01": a, "subj02": b}


def test_group_space_is_union_in_fsaverage_order():
    space = GroupSpace.from_masks(_masks())
    assert space.vertices["lh"].tolist() == [0, 1, 2, 3]
    assert space.vertices["rh"].tolist() == [1, 2, 4]
    assert space.n_vertices == 7
    assert space.columns["subj01"]["lh"].tolist() == [0, 1, 3]
    assert space.columns["subj01"]["rh"].tolist() == [4, 5]
    assert space.columns["subj02"]["rh"].tolist() == [4, 6]
    assert space.subject_mask("subj02").tolist() == [0, 1, 1, 1, 1, 0, 1]
    data = np.arange(7)[None]
    parts = space.split_hemis("subj01", data)
    assert parts["lh"].tolist() == [[0, 1, 3]] and parts["rh"].tolist() == [[4, 5]]


def test_group_space_round_trip_and_errors():
    space = GroupSpace.from_masks(_masks())
    back = GroupSpace.from_arrays(space.subjects, space.to_arrays())
    assert back.subject_columns("subj02").tolist() == space.subject_columns("subj02").tolist()
    with pytest.raises(DataError, match="subject 'subj09' is not in this model's group space"):
        space.subject_index("subj09")
    bad = _masks()
    bad["subj02"]["lh"] = np.ones(6)
    with pytest.raises(DataError, match="lh masks differ in length"):
        GroupSpace.from_masks(bad)


def test_splits_are_seeded_disjoint_and_cover():
    s = make_splits(100, seed=0, key="subj01")
    assert [len(s[k]) for k in ("train", "val", "testval")] == [85, 10, 5]
    assert sorted(np.concatenate(list(s.values())).tolist()) == list(range(100))
    again = make_splits(100, seed=0, key="subj01")
    assert all((s[k] == again[k]).all() for k in s)
    other = make_splits(100, seed=1, key="subj01")
    assert not (s["val"] == other["val"]).all()
    assert not (make_splits(100, seed=0, key="subj02")["val"] == s["val"]).all()


def test_splits_reject_bad_fractions():
    with pytest.raises(ConfigError, match="summing to 1"):
        make_splits(10, fractions=(0.5, 0.5, 0.5))
    with pytest.raises(ConfigError, match="cannot split 2 samples"):
        make_splits(2)


def test_same_as_compares_subjects_vertices_and_columns():
    a = np.zeros(20, bool)
    a[:10] = True
    b = np.zeros(20, bool)
    b[5:15] = True  # as many vertices, other ones
    one = GroupSpace.from_masks({"subj01": {"lh": a, "rh": a}})
    assert one.same_as(GroupSpace.from_masks({"subj01": {"lh": a.copy(), "rh": a}}))
    other = GroupSpace.from_masks({"subj01": {"lh": b, "rh": a}})
    assert one.n_vertices == other.n_vertices and not one.same_as(other)
    assert not one.same_as(GroupSpace.from_masks({"subj02": {"lh": a, "rh": a}}))


def test_image_splits_agree_across_subjects():
    from brainencoder.data.splits import make_image_splits

    rng = np.random.default_rng(0)
    shared = np.arange(300)
    ids = {
        "subj01": np.concatenate([shared, 1000 + np.arange(200)]),
        "subj02": rng.permutation(np.concatenate([shared, 2000 + np.arange(150)])),
    }
    splits = make_image_splits(ids, seed=3)
    where = {}
    for name, parts in splits.items():
        rows = np.concatenate(list(parts.values()))
        assert np.array_equal(np.sort(rows), np.arange(ids[name].size))  # each row once
        for split, r in parts.items():
            for nsd in ids[name][r]:
                assert where.setdefault(int(nsd), split) == split  # one split per image
        assert 0.05 < parts["val"].size / ids[name].size < 0.16
    again = make_image_splits(ids, seed=3)
    assert all(np.array_equal(again["subj02"][k], splits["subj02"][k]) for k in splits["subj02"])
    with pytest.raises(
        ConfigError, match=r"subj09: fewer than 2 .* images with image-consistent splits"
    ):
        make_image_splits({**ids, "subj09": np.array([5, 6])}, seed=3)


def test_store_splits_are_image_consistent_by_default(store):
    seen = {}
    for name in store.names:
        info = store.subject(name)
        nsd = np.asarray(store.manifest["subjects"][name]["nsd_train"])
        for split, rows in info.splits.items():
            for image in nsd[rows]:
                assert seen.setdefault(int(image), split) == split
    assert store.manifest["options"]["split_mode"] == "image"
    assert len(seen) < sum(store.subject(n).train_rows.size for n in store.names)  # shared
