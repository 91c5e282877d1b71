"""Per-vertex accuracy metrics, the challenge score, and ROI tables.

Definitions (per vertex, over the images of one subject):

* Pearson r between predicted and measured responses.
* R² = 1 - SSE / SST, SST about the measured mean (scikit-learn's
  ``r2_score`` with ``multioutput="raw_values"``; a constant target gives
  R² = 0 unless the prediction is exact).
* Noise-normalized score (Algonauts 2023): ``100 * max(r, 0)**2 / NC``, capped
  at 100, with NC the vertex's noise ceiling as a fraction. Where NC is 0 the
  vertex has no explainable variance and the score is undefined: it is NaN and
  left out of means and medians (the number of such vertices is reported).

All statistics accumulate in float64 over chunks of images
(:class:`StreamingStats`), so one subject's predictions never need to be in
memory at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..util.errors import DataError
from .regions import label_masks

__all__ = [
    "SCORE_RULES",
    "StreamingStats",
    "aggregate",
    "noise_normalized_score",
    "pearson_r",
    "r2_score",
]


@dataclass
class StreamingStats:
    """Running sums for per-vertex Pearson r and R².

    Parameters
    ----------
    n_vertices : int
    """

    n_vertices: int
    n: int = 0
    sums: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("p", "t", "pp", "tt", "pt"):
            self.sums[key] = np.zeros(self.n_vertices, dtype=np.float64)

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """Add a chunk of images.

        Parameters
        ----------
        pred, target : array-like of shape (n_images, n_vertices)
        """
        pred = np.asarray(pred, dtype=np.float64)
        target = np.asarray(target, dtype=np.float64)
        if pred.shape != target.shape or pred.ndim != 2 or pred.shape[1] != self.n_vertices:
            raise ValueError(
                f"pred {pred.shape} and target {target.shape} must both be "
                f"(n_images, {self.n_vertices})"
            )
        s = self.sums
        s["p"] += pred.sum(0)
        s["t"] += target.sum(0)
        s["pp"] += np.einsum("ij,ij->j", pred, pred)
        s["tt"] += np.einsum("ij,ij->j", target, target)
        s["pt"] += np.einsum("ij,ij->j", pred, target)
        self.n += pred.shape[0]

    def _centered(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.n < 2:
            raise DataError(
                f"need at least 2 images for correlations; got {self.n}: this split is too "
                "small to score (prepare the store with more images or other split fractions)"
            )
        s, n = self.sums, self.n
        cov = s["pt"] - s["p"] * s["t"] / n
        var_p = np.maximum(s["pp"] - s["p"] ** 2 / n, 0)
        var_t = np.maximum(s["tt"] - s["t"] ** 2 / n, 0)
        return cov, var_p, var_t

    def pearson(self) -> np.ndarray:
        """Per-vertex Pearson r, shape (n_vertices,); 0 where either side is constant."""
        cov, var_p, var_t = self._centered()
        denom = np.sqrt(var_p * var_t)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, cov / denom, 0.0)

    def r2(self) -> np.ndarray:
        """Per-vertex R², shape (n_vertices,)."""
        _, _, var_t = self._centered()
        s = self.sums
        sse = s["pp"] - 2 * s["pt"] + s["tt"]
        with np.errstate(invalid="ignore", divide="ignore"):
            r2 = 1 - sse / var_t
        return np.where(var_t > 0, r2, np.where(np.isclose(sse, 0), 1.0, 0.0))


def pearson_r(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-vertex Pearson r.

    Parameters
    ----------
    pred, target : array-like of shape (n_images, n_vertices)

    Returns
    -------
    ndarray of shape (n_vertices,)
    """
    stats = StreamingStats(np.shape(target)[1])
    stats.update(pred, target)
    return stats.pearson()


def r2_score(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-vertex coefficient of determination, shape (n_vertices,)."""
    stats = StreamingStats(np.shape(target)[1])
    stats.update(pred, target)
    return stats.r2()


SCORE_RULES = ("devkit", "nc_positive")


def noise_normalized_score(
    r: np.ndarray, noise_ceiling: np.ndarray, rule: str = "devkit"
) -> np.ndarray:
    """The Algonauts 2023 per-vertex score, in percent.

    Parameters
    ----------
    r : array-like of shape (n_vertices,)
        Pearson r on the test images (NaN, e.g. for a constant prediction,
        counts as 0).
    noise_ceiling : array-like of shape (n_vertices,)
        Noise ceiling as a fraction in [0, 1].
    rule : {"devkit", "nc_positive"}, default="devkit"
        "devkit": exactly the official devkit
        (``code/02_baseline_encoding_model/03_test_encoding.py`` of
        gifale95/algonauts_2023): r < 0 set to 0, NC = 0 replaced by 1e-14 (so
        such a vertex scores 100 when r > 0 and 0 otherwise), capped at 100;
        the leaderboard averaged this over every vertex. "nc_positive": the
        same, but NaN where NC = 0 (left out of means).

    Returns
    -------
    ndarray of shape (n_vertices,)
        ``min(100 * max(r, 0)**2 / NC, 100)``.
    """
    if rule not in SCORE_RULES:
        raise ValueError(f"rule must be one of {SCORE_RULES}; got {rule!r}")
    r = np.nan_to_num(np.asarray(r, dtype=np.float64), nan=0.0)
    nc = np.asarray(noise_ceiling, dtype=np.float64)
    if r.shape != nc.shape:
        raise ValueError(f"r {r.shape} and noise ceiling {nc.shape} differ in shape")
    if np.nanmax(nc, initial=0) > 1.0 + 1e-6:
        raise ValueError("noise ceilings must be fractions in [0, 1]; divide percentages by 100")
    safe = np.where(nc == 0, 1e-14, nc)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        score = np.minimum(100 * np.clip(r, 0, None) ** 2 / safe, 100.0)
    if rule == "nc_positive":
        return np.where(nc > 0, score, np.nan)
    return score


def aggregate(
    values: Mapping[str, np.ndarray],
    rois: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    mappings: Mapping[str, Mapping[int, str]] | None = None,
) -> list[dict]:
    """Mean and median of per-vertex values over all vertices and per ROI.

    Parameters
    ----------
    values : mapping of str to ndarray of shape (n_vertices_hemi,)
        Per hemisphere ("lh", "rh") values of one subject and one metric.
    rois : mapping of str to mapping of str to ndarray, optional
        ``rois[group][hemi]``: integer ROI labels in challenge space.
    mappings : mapping of str to mapping of int to str, optional
        ``mappings[group]``: label value -> ROI name (0 is "Unknown", skipped).

    Returns
    -------
    list of dict
        Rows with keys hemisphere ("lh", "rh" or "both"), roi_group, roi,
        n_vertices, mean, median. NaN values are left out.
    """
    rows = []

    def add(hemi: str, group: str, roi: str, v: np.ndarray) -> None:
        finite = v[np.isfinite(v)]
        rows.append(
            {
                "hemisphere": hemi,
                "roi_group": group,
                "roi": roi,
                "n_vertices": int(finite.size),
                "mean": float(finite.mean()) if finite.size else float("nan"),
                "median": float(np.median(finite)) if finite.size else float("nan"),
            }
        )

    add("both", "all", "all", np.concatenate(list(values.values())))
    for hemi, v in values.items():
        add(hemi, "all", "all", v)
    for group, per_hemi in (rois or {}).items():
        for roi in label_masks(per_hemi, (mappings or {}).get(group, {}), group):
            name = roi.name if roi.name is not None else str(roi.label)
            both = [values[h][mask] for h, mask in roi.hemis.items()]
            add("both", group, name, np.concatenate(both))
            for hemi, mask in roi.hemis.items():
                add(hemi, group, name, values[hemi][mask])
    return rows
