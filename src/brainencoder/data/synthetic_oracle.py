"""The planted truth as an oracle: the noise-free response of any image, for any planted world.

:func:`planted_signal` recomputes, from a synthetic dataset's config
(``truth/synthetic.json``), what its planted model responds to images it never
saw (synthesized images, another pool), on the same scale as the dataset's
``truth/subjXX/{lh,rh}_test_signal.npy``: the features are standardized with
the statistics of the dataset's own image pool and the responses with those
of the subject's own images, never with the given images'.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from ..util.errors import DataError
from .layout import HEMIS
from .synthetic import SyntheticConfig
from .synthetic_images import GEN_SIZE
from .synthetic_plant import build_state, plant_hemi, world_features
from .synthetic_truth import category_drive
from .synthetic_worlds import respond

__all__ = ["planted_signal", "read_config"]


def read_config(data: str | Path) -> SyntheticConfig:
    """The :class:`~.synthetic.SyntheticConfig` a synthetic dataset was written with.

    Parameters
    ----------
    data : path
        The folder :func:`~.synthetic.make_synthetic` wrote.

    Returns
    -------
    SyntheticConfig
    """
    path = Path(data) / "truth" / "synthetic.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(
            f"{path}: cannot read the synthetic dataset's config ({e}); "
            "pass the folder 'brainencoder synth' wrote"
        ) from None
    names = {f.name for f in dataclasses.fields(SyntheticConfig)}
    return SyntheticConfig(**{k: v for k, v in saved.items() if k in names})


def _resize(images: np.ndarray) -> list[np.ndarray]:
    """Images (n, H, W, 3) in [0, 1] at the generator's size, bicubic, as float arrays."""
    from PIL import Image

    out = []
    for img in images:
        if img.shape[:2] == (GEN_SIZE, GEN_SIZE):
            out.append(np.asarray(img, dtype=np.float64))
            continue
        channels = [
            Image.fromarray(np.asarray(img[..., c], dtype=np.float32), mode="F").resize(
                (GEN_SIZE, GEN_SIZE), Image.Resampling.BICUBIC
            )
            for c in range(3)
        ]
        out.append(np.clip(np.stack([np.asarray(c) for c in channels], axis=-1), 0, 1))
    return out


def planted_signal(
    images: np.ndarray,
    data: str | Path,
    subject: str,
    *,
    category: np.ndarray | None = None,
) -> np.ndarray:
    """The planted noise-free response of ``subject``'s vertices to ``images``.

    Parameters
    ----------
    images : ndarray of shape (n_images, H, W, 3)
        Float pixels in [0, 1], any size (resized to the generator's).
    data : path
        The folder :func:`~.synthetic.make_synthetic` wrote (it holds
        ``truth/synthetic.json``).
    subject : str
        ``"subj01"``, ... (group or held-out subjects).
    category : ndarray of int, shape (n_images,), optional
        For datasets written with ``categories``: 0 none, 1 face, 2 place (the
        category drive is planted from labels, not pixels); default all 0.

    Returns
    -------
    ndarray of float32, shape (n_images, n_vertices)
        The subject's vertices in challenge order, lh then rh, on the scale of
        ``truth/subjXX/{lh,rh}_test_signal.npy``.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"images must have shape (n, H, W, 3); got {images.shape}")
    config = read_config(data)
    names = [f"subj{k + 1:02d}" for k in range(config.n_total)]
    if subject not in names:
        raise DataError(f"{subject!r} is not a subject of {data}; choose one of {names}")
    k = names.index(subject)
    state = build_state(config)
    feats, _ = world_features(state.world, _resize(images), state.feat_stats)
    if category is None:
        category = np.zeros(len(images), dtype=np.int64)
    sub_rng = np.random.default_rng([config.seed, k])
    parts = []
    for hemi in HEMIS:
        planted = plant_hemi(state, k, hemi, sub_rng)
        sub_rng.normal(size=planted.signal.shape)  # the measurement noise the writer draws
        cx = state.cortices[hemi]
        extra = category_drive(cx, np.asarray(category)) if config.categories else None
        signal = respond(state.world, feats, cx, planted.tuning, planted.gain, extra, planted.stats)
        parts.append(signal[:, planted.keep])
    return np.concatenate(parts, axis=1).astype(np.float32)
