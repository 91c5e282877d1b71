"""A synthetic dataset in the exact challenge layout, with a planted ground truth.

The planted model is a small "visual cortex":

* Vertices are fsaverage5 vertices (the first 10,242 fsaverage indices, so the
  data live in true fsaverage index space and plot exactly on nilearn's
  offline fsaverage5 meshes) nearest to the occipital pole of each hemisphere.
* Each vertex has a receptive field (a Gaussian on the image) whose centre is
  a smooth function of its position on the sphere (a retinotopic map) and
  whose size grows with distance from the pole.
* Image features are phase-invariant and therefore nonlinear in the pixels:
  local gradient energy in two orientations, absolute colour-opponent
  contrast and luminance. Each vertex weights them with a preference that
  varies smoothly over the cortex, pooled over its receptive field, followed
  by a soft rectification.
* Subjects share the map, with small per-subject jitter of receptive fields
  and gains; one subject misses a patch of vertices.
* Noise is vertex-specific: the noise ceiling (fraction of variance of a
  measurement explained by the signal) is high near the pole and in a
  "face patch" and low elsewhere, so a good model's score map is localized.

The truth (noise ceilings as fractions, held-back noisy test responses and
their noise-free signal) is written under ``OUT/truth/subjXX/``.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..core.space import ico_vertices
from ..util.errors import BrainEncoderError
from ..util.fileio import save_mapping, save_npy_atomic, write_json_atomic
from .layout import HEMIS
from .synthetic_images import draw_pool, save_png
from .synthetic_truth import (
    FACE_PATCH,
    PLACE_PATCH,
    Cortex,
    category_drive,
    make_cortex,
    noise_ceiling,
    planted_responses,
    retinotopic_map,
    roi_labels,
    vertex_patch,
)

__all__ = ["SyntheticConfig", "make_synthetic"]

logger = logging.getLogger(__name__)

ROI_GROUPS = {
    "prf-visualrois": ["Unknown", "V1v", "V1d", "V2v", "V2d", "V3v", "V3d", "hV4"],
    "floc-faces": ["Unknown", "OFA", "FFA-1", "FFA-2", "mTL-faces", "aTL-faces"],
    "streams": [
        "Unknown",
        "early",
        "midventral",
        "midlateral",
        "midparietal",
        "ventral",
        "lateral",
        "parietal",
    ],
}


@dataclass
class SyntheticConfig:
    """Sizes and noise of a synthetic dataset.

    Attributes
    ----------
    n_subjects : int, default=3
    n_train : int, default=300
        Training images of the first subject; subject ``k`` (0-based) gets
        ``n_train - k * max(1, n_train // 12)``, so counts differ as in the challenge.
    n_test : int, default=50
        Test images of the first subject (subject ``k``: ``n_test - k * max(1, n_test // 10)``).
    n_vertices : int, default=1200
        Group vertices per hemisphere (at most 10,242).
    image_size : int, default=425
        Side of the square PNG images (the challenge's is 425).
    missing_fraction : float, default=0.04
        Fraction of each hemisphere's vertices the last subject lacks.
    shared_fraction : float, default=0.3
        Fraction of images every subject sees (like NSD's shared 1,000).
    n_fsaverage : int, default=ico_vertices(7)
        Length of the fsaverage-space masks (fsaverage, icosahedral order 7).
    categories : bool, default=False
        Plant image categories: a quarter of the images show a schematic face,
        a quarter a schematic place (horizon and buildings); a face patch
        (the ``floc-faces`` ROIs) responds to faces and a place patch (a
        ``floc-places`` group: OPA, PPA) to places, on top of the
        retinotopic model, so in-silico rankings can be checked against truth
        (``truth/categories.json`` lists each image's category).
    held_out : int, default=0
        Extra subjects (named after the others) meant to be kept out of group
        training, for ``adapt``: same planted truth family, their own images,
        noise and jitter, and their own vertex subset: they have a patch
        (``missing_fraction`` of each hemisphere) that none of the group
        subjects has, and lack another. ``truth/synthetic.json`` lists them.
    seed : int, default=0
    """

    n_subjects: int = 3
    n_train: int = 300
    n_test: int = 50
    n_vertices: int = 1200
    image_size: int = 425
    missing_fraction: float = 0.04
    shared_fraction: float = 0.3
    n_fsaverage: int = ico_vertices(7)
    categories: bool = False
    held_out: int = 0
    seed: int = 0

    @property
    def n_total(self) -> int:
        """Group subjects plus held-out subjects."""
        return self.n_subjects + self.held_out

    def held_out_names(self) -> list[str]:
        """Names of the held-out subjects (after the group subjects)."""
        return [f"subj{k + 1:02d}" for k in range(self.n_subjects, self.n_total)]

    def train_counts(self) -> list[int]:
        """Training images per subject (held-out subjects repeat the first counts)."""
        step = max(1, self.n_train // 12)
        group = [self.n_train - k * step for k in range(self.n_subjects)]
        return group + [group[k % len(group)] for k in range(self.held_out)]

    def test_counts(self) -> list[int]:
        """Test images per subject."""
        step = max(1, self.n_test // 10)
        group = [self.n_test - k * step for k in range(self.n_subjects)]
        return group + [group[k % len(group)] for k in range(self.held_out)]

    def validate(self) -> None:
        checks = [
            (1 <= self.n_subjects <= 99, "'n_subjects' must be in [1, 99]"),
            (
                0 <= self.held_out <= 99 - self.n_subjects,
                "'held_out' must be in [0, 99 - n_subjects]",
            ),
            (
                min(self.train_counts()) >= 20,
                "'n_train' leaves fewer than 20 training images for the last subject",
            ),
            (min(self.test_counts()) >= 1, "'n_test' leaves no test image for the last subject"),
            (
                10 <= self.n_vertices <= ico_vertices(5),
                f"'n_vertices' must be in [10, {ico_vertices(5)}]",
            ),
            (16 <= self.image_size <= 2048, "'image_size' must be in [16, 2048]"),
            (0 <= self.missing_fraction < 0.5, "'missing_fraction' must be in [0, 0.5)"),
            (0 <= self.shared_fraction <= 1, "'shared_fraction' must be in [0, 1]"),
            (
                self.n_fsaverage >= ico_vertices(5),
                f"'n_fsaverage' must be at least {ico_vertices(5)}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise BrainEncoderError(f"{message}; got {self}")


# ----------------------------------------------------------------------------- writer


def _assign_images(
    rng: np.random.Generator, config: SyntheticConfig
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """NSD ids of the image pool (sorted) and each subject's (train, test) ids.

    A shared part of the pool is seen by every subject; the rest is each
    subject's own.
    """
    n_train, n_test = config.train_counts(), config.test_counts()
    n_shared = round(config.shared_fraction * min(n_train))
    n_pool = n_shared + sum(n - n_shared for n in n_train) + sum(n_test)
    nsd_ids = np.sort(rng.choice(73000, size=n_pool, replace=False))
    order = rng.permutation(n_pool)
    shared, rest = order[:n_shared], list(order[n_shared:])
    assignments = []
    for k in range(config.n_total):
        own = [rest.pop() for _ in range(n_train[k] - n_shared)]
        test = [rest.pop() for _ in range(n_test[k])]
        train = np.sort(nsd_ids[np.concatenate([shared, own]).astype(int)])
        assignments.append((train, np.sort(nsd_ids[np.array(test, dtype=int)])))
    return nsd_ids, assignments


def _kept_vertices(
    cx: Cortex, config: SyntheticConfig, k: int, hemi: str, sub_rng: np.random.Generator
) -> np.ndarray:
    """Which of the hemisphere's vertices subject ``k`` has (bool, shape (n,))."""
    keep = np.ones(cx.vertices.size, dtype=bool)
    n_miss = round(config.missing_fraction * cx.vertices.size)
    if k == config.n_subjects - 1 and config.n_subjects > 1:
        seed_v = sub_rng.integers(cx.vertices.size)
        dist = np.linalg.norm(cx.uv - cx.uv[seed_v], axis=1)
        keep[np.argsort(dist, kind="stable")[:n_miss]] = False
    if config.held_out:
        own_patch = vertex_patch(cx, n_miss, config.seed, hemi, "held-out own")
        if k < config.n_subjects:
            keep &= ~own_patch  # only held-out subjects have these vertices
        else:
            keep &= ~vertex_patch(cx, n_miss, config.seed + k, hemi, "held-out lacks")
    return keep


@dataclass(frozen=True)
class _Subject:
    """One subject as :func:`_write_hemi` draws it: index, folders, images and generator.

    ``pool`` is (features, category) of the subject's train then test images,
    the first ``n_train`` of them training images; ``rng`` is the subject's
    generator, drawn from hemisphere after hemisphere.
    """

    k: int
    dirs: dict[str, Path]
    pool: tuple[np.ndarray, np.ndarray]
    n_train: int
    rng: np.random.Generator


def _write_hemi(
    subject: _Subject,
    hemi: str,
    cx: Cortex,
    retinotopy: tuple[np.ndarray, np.ndarray],
    config: SyntheticConfig,
) -> None:
    """The subject's mask, ROI labels, training fMRI and test truth of one hemisphere."""
    centers, pref = retinotopy
    feats, category = subject.pool
    dirs, n_train, k, sub_rng = subject.dirs, subject.n_train, subject.k, subject.rng
    keep = _kept_vertices(cx, config, k, hemi, sub_rng)
    mask = np.zeros(config.n_fsaverage, dtype=np.int32)
    mask[cx.vertices[keep]] = 1
    roi_dir = dirs["roi"]
    np.save(roi_dir / f"{hemi}.all-vertices_fsaverage_space.npy", mask)
    place_patch = PLACE_PATCH if config.categories else None
    for group, labels in roi_labels(cx, FACE_PATCH, place_patch).items():
        fs_labels = np.zeros(config.n_fsaverage, dtype=np.int32)
        fs_labels[cx.vertices[keep]] = labels[keep]
        np.save(roi_dir / f"{hemi}.{group}_fsaverage_space.npy", fs_labels)
        np.save(roi_dir / f"{hemi}.{group}_challenge_space.npy", labels[keep])
    jitter = sub_rng.normal(scale=0.02, size=centers.shape)
    gain = 1 + 0.1 * sub_rng.normal(size=cx.vertices.size)
    nc = noise_ceiling(cx, FACE_PATCH, place_patch)[keep]
    sd = np.sqrt((1 - nc) / nc)
    extra = category_drive(cx, category) if config.categories else None
    signal = planted_responses(feats, cx, pref, centers + jitter, gain, extra)[:, keep]
    measured = (signal + sd * sub_rng.normal(size=signal.shape)).astype(np.float32)
    truth = dirs["truth"]
    save_npy_atomic(dirs["fmri"] / f"{hemi}_training_fmri.npy", measured[:n_train])
    save_npy_atomic(truth / f"{hemi}_test_fmri.npy", measured[n_train:])
    save_npy_atomic(truth / f"{hemi}_test_signal.npy", signal[n_train:].astype(np.float32))
    save_npy_atomic(truth / f"{hemi}_noise_ceiling.npy", nc.astype(np.float32))


def _subject_dirs(out: Path, name: str) -> dict[str, Path]:
    subj = out / name
    dirs = {
        "roi": subj / "roi_masks",
        "train": subj / "training_split" / "training_images",
        "test": subj / "test_split" / "test_images",
        "fmri": subj / "training_split" / "training_fmri",
        "truth": out / "truth" / name,
    }
    for d in dirs.values():
        d.mkdir(parents=True)
    return dirs


def make_synthetic(out: str | Path, config: SyntheticConfig | None = None) -> Path:
    """Write a synthetic dataset in the challenge layout, with its truth.

    Parameters
    ----------
    out : path
        Folder to create; it will hold ``subjXX/`` folders (the data root) and
        ``truth/subjXX/{lh,rh}_{noise_ceiling,test_fmri,test_signal}.npy``.
    config : SyntheticConfig, optional
        Sizes, noise and seed; the same config gives identical files.

    Returns
    -------
    out : Path
    """
    config = config or SyntheticConfig()
    config.validate()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise BrainEncoderError(f"{out} exists and is not empty; choose a new folder")
    rng = np.random.default_rng(config.seed)
    names = [f"subj{k + 1:02d}" for k in range(config.n_total)]
    nsd_ids, assignments = _assign_images(rng, config)
    images, category, feats = draw_pool(rng, nsd_ids.size, config.categories, config.seed)
    by_nsd = dict(zip(nsd_ids.tolist(), range(nsd_ids.size)))
    cortices = {h: make_cortex(h, config.n_vertices) for h in HEMIS}
    maps = {hemi: retinotopic_map(rng, cx, hemi) for hemi, cx in cortices.items()}
    groups = dict(ROI_GROUPS)
    if config.categories:
        groups["floc-places"] = ["Unknown", "OPA", "PPA", "RSC"]

    with ThreadPoolExecutor() as pool:
        jobs = []
        for k, name in enumerate(names):
            dirs = _subject_dirs(out, name)
            train_ids, test_ids = assignments[k]
            for split, ids in (("train", train_ids), ("test", test_ids)):
                for i, nsd in enumerate(ids.tolist()):
                    path = dirs[split] / f"{split}-{i + 1:04d}_nsd-{nsd:05d}.png"
                    jobs.append(pool.submit(save_png, path, images[by_nsd[nsd]], config.image_size))
            for name_group, labels in groups.items():
                save_mapping(dirs["roi"] / f"mapping_{name_group}.npy", dict(enumerate(labels)))
            sub_rng = np.random.default_rng([config.seed, k])
            rows = [by_nsd[i] for i in np.concatenate([train_ids, test_ids]).tolist()]
            subject = _Subject(k, dirs, (feats[rows], category[rows]), train_ids.size, sub_rng)
            for hemi, cx in cortices.items():
                _write_hemi(subject, hemi, cx, maps[hemi], config)
        for job in jobs:
            job.result()
    if config.categories:
        names_of = {0: "none", 1: "face", 2: "place"}
        write_json_atomic(
            out / "truth" / "categories.json",
            {f"{int(nsd):05d}": names_of[int(category[i])] for nsd, i in by_nsd.items()},
        )
    write_json_atomic(
        out / "truth" / "synthetic.json",
        {**asdict(config), "held_out_subjects": config.held_out_names()},
    )
    logger.info("wrote synthetic dataset with %d subjects to %s", config.n_total, out)
    return out
