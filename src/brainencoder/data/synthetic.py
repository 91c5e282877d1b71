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
from .synthetic_images import save_png
from .synthetic_plant import WorldState, build_state, plant_hemi
from .synthetic_truth import FACE_PATCH, PLACE_PATCH, roi_labels
from .synthetic_worlds import WORLDS

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
    world : str, default="retino"
        The planted world (:data:`.synthetic_worlds.WORLDS`): what drives the
        responses. ``retino`` is the original generator.
    subject_rf_shift : float, default=0.0
        Sd (image widths) of a smooth per-subject, per-vertex shift of the
        receptive-field centres around the group's (0: the world's preset).
    subject_tuning_jitter : float, default=0.0
        Sd of a smooth per-subject, per-vertex jitter of the feature weights
        around the group's (0: the world's preset).
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
    world: str = "retino"
    subject_rf_shift: float = 0.0
    subject_tuning_jitter: float = 0.0
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
        if self.world not in WORLDS:
            raise BrainEncoderError(
                f"unknown synthetic world {self.world!r}; choose one of {', '.join(WORLDS.names())}"
            )
        checks = [
            (0 <= self.subject_rf_shift <= 0.5, "'subject_rf_shift' must be in [0, 0.5]"),
            (0 <= self.subject_tuning_jitter <= 5, "'subject_tuning_jitter' must be in [0, 5]"),
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


def _write_hemi(
    state: WorldState, k: int, dirs: dict[str, Path], hemi: str, sub_rng: np.random.Generator
) -> None:
    """Subject ``k``'s mask, ROI labels, training fMRI and test truth of one hemisphere."""
    config, cx = state.config, state.cortices[hemi]
    planted = plant_hemi(state, k, hemi, sub_rng)
    keep, signal, nc = planted.keep, planted.signal, planted.nc
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
    sd = np.sqrt((1 - nc) / nc)
    measured = (signal + sd * sub_rng.normal(size=signal.shape)).astype(np.float32)
    n_train = state.assignments[k][0].size
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
    state = build_state(config)
    names = [f"subj{k + 1:02d}" for k in range(config.n_total)]
    by_nsd = state.by_nsd
    groups = dict(ROI_GROUPS)
    if config.categories:
        groups["floc-places"] = ["Unknown", "OPA", "PPA", "RSC"]

    with ThreadPoolExecutor() as pool:
        jobs = []
        for k, name in enumerate(names):
            dirs = _subject_dirs(out, name)
            for split, ids in zip(("train", "test"), state.assignments[k]):
                for i, nsd in enumerate(ids.tolist()):
                    path = dirs[split] / f"{split}-{i + 1:04d}_nsd-{nsd:05d}.png"
                    img = state.images[by_nsd[nsd]]
                    jobs.append(pool.submit(save_png, path, img, config.image_size))
            for name_group, labels in groups.items():
                save_mapping(dirs["roi"] / f"mapping_{name_group}.npy", dict(enumerate(labels)))
            sub_rng = np.random.default_rng([config.seed, k])
            for hemi in HEMIS:
                _write_hemi(state, k, dirs, hemi, sub_rng)
        for job in jobs:
            job.result()
    save_npy_atomic(out / "truth" / "features.npy", state.feats.astype(np.float32))
    save_npy_atomic(out / "truth" / "features_nsd.npy", state.nsd_ids.astype(np.int64))
    category = state.category
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
