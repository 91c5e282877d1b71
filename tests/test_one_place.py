"""One idea, one place: each shared helper gives what the code it replaced gave.

The hand-made versions below are the code that stood in compare, explore,
the metrics tables and the region labels before they shared
``core.regions``, ``GroupSpace.split_columns``, ``plot_difference_map`` and
the page template helper.
"""

from __future__ import annotations

import base64
import copy
import html
import json
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from brainencoder.core.metrics import aggregate
from brainencoder.core.regions import (
    group_regions,
    label_masks,
    roi_mask,
    subject_roi_masks,
)
from brainencoder.core.space import HEMIS, GroupSpace
from brainencoder.data.layout import read_layout
from brainencoder.util.errors import DataError

# ----------------------------------------------------------------------------- the hand-made masks


def _old_roi_columns(subj, name):
    """explore's roi_columns before: the first group naming ``name``, all its ids."""
    valid = set()
    for group in subj.roi_groups:
        mapping = subj.load_mapping(group)
        valid.update(v for k, v in mapping.items() if k != 0)
        ids = [k for k, v in mapping.items() if v == name and k != 0]
        if ids:
            labels = np.concatenate([subj.load_rois(group, h) for h in HEMIS])
            return np.isin(labels, ids)
    return sorted(valid)


def _old_compare_rois(subj):
    """compare's per-ROI masks before: mapping order, named labels with vertices."""
    out = []
    for group in subj.roi_groups:
        labels = np.concatenate([subj.load_rois(group, h) for h in HEMIS])
        for k, roi in subj.load_mapping(group).items():
            sel = labels == k
            if k != 0 and sel.any():
                out.append((roi, sel))
    return out


def _old_aggregate_masks(per_hemi, names):
    """The metrics table's per-ROI masks before: sorted labels, unnamed ones by number."""
    out = []
    for label in sorted(set().union(*(np.unique(x).tolist() for x in per_hemi.values()))):
        if label != 0:
            out.append((names.get(label, str(label)), {h: per_hemi[h] == label for h in per_hemi}))
    return out


def _old_group_regions(layout, space, groups):
    """group_regions before (fsaverage labels of the group vertices, first ROI wins)."""
    labels = np.zeros(space.n_vertices, dtype=np.int64)
    names = []
    for group in groups:
        holders = [s for s in space.subjects if s in layout.subjects]
        holders = [s for s in holders if group in layout[s].roi_groups]
        ids = {}
        for subject in holders:
            subj = layout[subject]
            mapping = subj.load_mapping(group)
            for hemi in HEMIS:
                values = subj.load_rois(group, hemi, space="fsaverage")[space.vertices[hemi]]
                target = labels[space.hemi_slice(hemi)]
                for k in np.unique(values[values > 0]):
                    roi = mapping.get(int(k), f"{group}-{k}")
                    if roi not in ids:
                        names.append(roi if roi not in names else f"{group}:{roi}")
                        ids[roi] = len(names)
                    target[(values == k) & (target == 0)] = ids[roi]
    return labels, names


@pytest.fixture(scope="module")
def layout(synth_root):
    return read_layout(synth_root)


@pytest.fixture(scope="module")
def space(layout):
    return GroupSpace.from_masks({s: layout[s].masks for s in layout.names})


def test_roi_masks_agree_with_the_hand_made_ones_on_the_synthetic_data(layout, space):
    checked = 0
    for name in layout.names:
        subj = layout[name]
        rois = subject_roi_masks(subj)
        old = _old_compare_rois(subj)
        new = [(r.name, r.both()) for r in rois if r.name is not None]
        assert [n for n, _ in new] == [n for n, _ in old]
        for (_, a), (_, b) in zip(new, old):
            np.testing.assert_array_equal(a, b)
        for group in subj.roi_groups:
            per_hemi = {h: subj.load_rois(group, h) for h in HEMIS}
            mapping = subj.load_mapping(group)
            new_masks = label_masks(per_hemi, mapping, group)
            old_masks = _old_aggregate_masks(per_hemi, mapping)
            assert [r.name for r in new_masks] == [n for n, _ in old_masks]
            for r, (_, masks) in zip(new_masks, old_masks):
                assert r.group == group
                for h in HEMIS:
                    np.testing.assert_array_equal(r.hemis[h], masks[h])
            for roi in {v for k, v in mapping.items() if k != 0}:
                before = _old_roi_columns(subj, roi)
                if isinstance(before, np.ndarray) and before.any():
                    np.testing.assert_array_equal(roi_mask(subj, roi), before)
                    checked += 1
        valid = _old_roi_columns(subj, "FFA-9")
        with pytest.raises(DataError) as err:
            roi_mask(subj, "FFA-9")
        assert str(err.value) == f"{name}: unknown ROI 'FFA-9'; valid names: {', '.join(valid)}"
    assert checked > 20
    groups = ("floc-faces", "floc-places", "prf-visualrois", "streams")
    regions = group_regions(layout, space, groups)
    labels, names = _old_group_regions(layout, space, groups)
    np.testing.assert_array_equal(regions.labels, labels)
    assert regions.names == names


def test_label_masks_edge_cases_and_the_metrics_table():
    labels = {"lh": np.array([0, 2, 2, 7, 3]), "rh": np.array([3, 0, 9])}
    mapping = {0: "Unknown", 2: "A", 3: "B", 9: "A"}  # 7 unnamed; A has two values
    masks = label_masks(labels, mapping, "g")
    assert [(m.label, m.name) for m in masks] == [(2, "A"), (3, "B"), (7, None), (9, "A")]
    np.testing.assert_array_equal(masks[3].hemis["lh"], np.zeros(5, bool))  # rh only
    np.testing.assert_array_equal(masks[1].both(), [0, 0, 0, 0, 1, 1, 0, 0])
    subject = SimpleNamespace(
        name="s",
        roi_groups=["g"],
        load_rois=lambda group, hemi: labels[hemi],
        load_mapping=lambda group: mapping,
    )
    np.testing.assert_array_equal(roi_mask(subject, "A"), [0, 1, 1, 0, 0, 0, 0, 1])
    with pytest.raises(DataError, match="^s: unknown ROI '7'; valid names: A, B$"):
        roi_mask(subject, "7")  # a label number is no name
    mapping[5] = "C"
    with pytest.raises(DataError, match="^s: ROI 'C' has no vertices in this subject$"):
        roi_mask(subject, "C")
    values = {"lh": np.arange(5.0), "rh": np.array([10.0, 11.0, 12.0])}
    rows = aggregate(values, {"g": labels}, {"g": mapping})
    by = {(r["hemisphere"], r["roi"]): r for r in rows}
    old = _old_aggregate_masks(labels, mapping)
    expected = [("both", "all"), ("lh", "all"), ("rh", "all")]
    expected += [(h, n) for n, _ in old for h in ("both", *HEMIS)]
    assert [(r["hemisphere"], r["roi"]) for r in rows] == expected
    assert by[("both", "7")]["mean"] == 3.0 and by[("rh", "B")]["mean"] == 10.0


# ----------------------------------------------------------------------------- hemisphere splits


def test_split_columns_is_split_hemis_on_the_subject_columns(space):
    rng = np.random.default_rng(0)
    group = rng.normal(size=(4, space.n_vertices))
    for name in space.subjects:
        own = group[:, space.subject_columns(name)]
        parts = space.split_columns(name, own)
        for h, expected in space.split_hemis(name, group).items():
            np.testing.assert_array_equal(parts[h], expected)
            assert parts[h].shape == (4, space.n_subject_vertices(name, h))
        np.testing.assert_array_equal(space.split_columns(name, own[0])["rh"], parts["rh"][0])
        with pytest.raises(DataError, match=f"^{name}: {own.shape[1] - 1} columns, expected"):
            space.split_columns(name, own[:, 1:])


# ----------------------------------------------------------------------------- one difference map


def test_compare_and_explore_draw_the_one_difference_map(space, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    import brainencoder.evaluation.compare as compare
    import brainencoder.evaluation.plotting as plotting
    import brainencoder.experiments.explore as explore

    drawn = []

    def record(maps, title, label, **options):
        drawn.append((maps, title, label, options))
        return Figure()

    monkeypatch.setattr(plotting, "plot_surface_map", record)
    rng = np.random.default_rng(1)
    n = {s: space.subject_columns(s).size for s in space.subjects}
    diffs = {s: rng.normal(size=n[s]) for s in space.subjects}

    def fs5(subject):
        return {
            h: plotting.fsaverage_to_fsaverage5(space.to_fsaverage(subject, h, v), h)
            for h, v in space.split_columns(subject, diffs[subject]).items()
        }

    first = space.subjects[0]
    per_vertex = {f"{first}.a": np.zeros(n[first]), f"{first}.b": diffs[first]}
    store = SimpleNamespace(names=[first])
    compare._difference_map(store, space, per_vertex, ["a", "b"], tmp_path / "d.png")
    maps, title, label, options = drawn.pop()
    assert title == f"{first}: Pearson r, b minus a" and label == "r difference"
    lim = float(np.percentile(np.abs(diffs[first]), 99))
    assert options == {
        "vmin": -lim,
        "vmax": lim,
        "cmap": "RdBu_r",
        "output_file": tmp_path / "d.png",
    }
    for h in HEMIS:
        np.testing.assert_array_equal(maps[h], fs5(first)[h])

    explore._cortex_map(space, space.subjects, diffs, tmp_path / "m.png", "all", 3, "FFA-1")
    maps, title, label, options = drawn.pop()
    assert title == "all: mean prediction, top 3 images for FFA-1 minus all images"
    layers = [fs5(s) for s in space.subjects]
    with warnings.catch_warnings():  # vertices no subject has: NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = {h: np.nanmean([layer[h] for layer in layers], 0) for h in HEMIS}
    lim = float(np.nanpercentile(np.abs(np.concatenate([mean["lh"], mean["rh"]])), 99))
    assert options["vmin"] == -lim and options["vmax"] == lim and options["cmap"] == "RdBu_r"
    for h in HEMIS:
        np.testing.assert_array_equal(maps[h], mean[h])


# ----------------------------------------------------------------------------- data-space check


def test_explore_data_space_error_names_the_vertices(layout, space):
    from brainencoder.experiments.explore import check_data_space

    name = space.subjects[0]
    check_data_space(space, layout, space.subjects)  # its own data: fine
    other = copy.deepcopy(layout)
    mask = other[name].masks["lh"]
    first, free = np.flatnonzero(mask)[0], np.flatnonzero(~mask)[0]
    mask[first], mask[free] = False, True
    path = other[name].roi_dir / "lh.all-vertices_fsaverage_space.npy"
    with pytest.raises(DataError) as err:
        check_data_space(space, other, [name])
    n = int(mask.sum())
    assert str(err.value) == (
        f"{path}: {name}'s vertices in this dataset are not those of the model's {name}, so its "
        f"ROI labels would rank the wrong vertices: {n} vertices in each, but fsaverage vertices "
        f"only in the data: {free}; only in the model: {first}; pass --data with the dataset "
        "the model was trained on"
    )
    with pytest.raises(DataError, match=f"^{name} lh {n} vertices in each"):
        check_data_space(space, other, [name], "{subject} {hemi} {diff}")


# ----------------------------------------------------------------------------- the run report


def _fake_run(root):
    run = root / "run<b>"
    (run / "eval" / "testval").mkdir(parents=True)
    (run / "eval" / "odd").mkdir()
    (run / "figures").mkdir()
    (run / "compare").mkdir()
    (run / "compare" / "index.html").write_text("page")
    header = {"model_kind": "ridge", "store": "/s<script>", "brainencoder_version": "0.1"}
    (run / "config.yaml").write_text(
        json.dumps({"run": header, "lr": 0.001, "model": {"trunk": "x"}}) + "\n# <i>note</i>\n"
    )
    (run / "summary.json").write_text(json.dumps({"epochs_run": 3, "seconds": 90}))
    rows = []
    for subject, value in (("subj01", 0.25), ("x<y", 0.5)):
        for statistic in ("mean", "median"):
            rows.append(f"{subject},both,all,all,pearson,{statistic},10,{value}")
    csv = "subject,hemisphere,roi_group,roi,metric,statistic,n_vertices,value\n"
    (run / "eval" / "testval" / "metrics.csv").write_text(csv + "\n".join(rows) + "\n")
    (run / "eval" / "odd" / "metrics.csv").write_text(csv)
    (run / "figures" / "a&b.png").write_bytes(b"\x89PNG fake")
    return run


def test_report_page_holds_its_sections(tmp_path, monkeypatch):
    import brainencoder.evaluation.report as report

    run = _fake_run(tmp_path)
    views = []

    def view(run_dir, split, metric, subject):
        views.append((split, metric, subject))
        return "<p class='v'>3-D \"view\" & more</p>"

    monkeypatch.setattr(report, "_surface_view", view)
    text = report.write_report(run).read_text()
    assert views == [("testval", "pearson", "subj01")]  # only a plain name reaches the view
    assert text.startswith("<!DOCTYPE html><html><head><meta charset='utf-8'>")
    sections = [
        "<title>brainencoder report: run&lt;b&gt;</title>",
        "<h1>brainencoder run: run&lt;b&gt;</h1>",
        f"folder <code>{html.escape(str(run))}</code>",
        "<h2>Run</h2><table>",
        "<tr><th>model kind</th><td style='text-align:left'>ridge</td></tr>",
        "<tr><th>store</th><td style='text-align:left'>/s&lt;script&gt;</td></tr>",
        "<tr><th>time</th><td style='text-align:left'>1.5 min</td></tr>",
        "<h2>Pages of this run</h2><ul><li><a href='compare/index.html'>compare</a></li></ul>",
        "<h2>Scores on the testval split</h2>",
        "<td>0.2500</td>",
        "x&lt;y",
        "<h2>Figures</h2>",
        "<h3>a&amp;b</h3><img class='figure' alt='a&amp;b' src='data:image/png;base64,"
        + base64.b64encode(b"\x89PNG fake").decode()
        + "'>",
        "<h2>Interactive surface (drag to rotate)</h2>",
        "<iframe title='surface' sandbox='allow-scripts' srcdoc=\"",
        "<h2>Config</h2><pre>",
        "# &lt;i&gt;note&lt;/i&gt;",
        "document.body.dataset.figuresLoaded",
    ]
    at = [text.find(s) for s in sections]
    assert all(i >= 0 for i in at), [s for s, i in zip(sections, at) if i < 0]
    assert at == sorted(at)  # in this order
    assert "Scores on the odd split" not in text and "x<y" not in text and "<i>" not in text
    srcdoc = text.split('srcdoc="')[1].split('"></iframe>')[0]
    assert html.unescape(srcdoc) == "<p class='v'>3-D \"view\" & more</p>"
    assert text.endswith("</script></body></html>")
