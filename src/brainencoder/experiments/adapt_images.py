"""Which of a new subject's images ``adapt`` trains on: a seeded ``N`` or a listed set.

``adapt --n-images N`` draws ``N`` of the subject's train-split images;
``adapt --images list.txt`` (``be.adapt(images=...)``) takes exactly the images
a list names, one challenge image file name per line as in the subject's
``training_split/training_images`` folder (``train-0001_nsd-00013.png``; what
``brainencoder plan`` writes). Either way the images are then split into the
rows that train and the rows that pick the best epoch and the L2 pull.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.splits import make_splits
from ..data.store import Store
from ..util.errors import ConfigError, DataError

__all__ = [
    "choose_rows",
    "listed_rows",
    "read_image_list",
    "split_rows",
    "train_split_names",
]

_TRAIN_NAME = re.compile(r"^train-(\d+)_nsd-(\d+)\.\w+$")
#: the fewest images adapt trains from (a few of them pick the best epoch); 0 is zero-shot
MIN_IMAGES = 10


def train_split_names(store: Store, subject: str) -> list[str]:
    """File names of the subject's train-split images: those ``adapt`` may train on.

    Parameters
    ----------
    store : Store
    subject : str

    Returns
    -------
    list of str
        ``train-NNNN_nsd-NNNNN.png`` of every training row in the store's
        ``train`` split, in row order (its ``val`` and ``testval`` rows are kept
        for evaluation).
    """
    rows = np.sort(store.split_rows(subject, "train"))
    images = store.subject(subject).train_rows
    return [f"train-{r + 1:04d}_nsd-{int(store.nsd_ids[images[r]]):05d}.png" for r in rows]


def read_image_list(path: str | Path) -> list[tuple[int, str]]:
    """The image names a list file holds, with their line numbers.

    Parameters
    ----------
    path : path
        A text file: one image file name per line; blank lines and ``#``
        comments are ignored.

    Returns
    -------
    list of (int, str)
        (1-based line number, file name) of every listed image.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the image list ({exc})") from None
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        name = line.split("#", 1)[0].strip()
        if name:
            entries.append((number, Path(name).name))
    return entries


def listed_rows(
    store: Store, subject: str, entries: Sequence[tuple[int, str]], source: str
) -> np.ndarray:
    """The subject's training rows of listed images; one-line errors naming source and line.

    Parameters
    ----------
    store : Store
    subject : str
    entries : sequence of (int, str)
        (line number, file name), as :func:`read_image_list` returns.
    source : str
        Where the list came from (a file name, or ``images=``), for messages.

    Returns
    -------
    ndarray of int64, shape (n_listed,)
        Training-row indices, sorted.
    """
    allowed = set(store.split_rows(subject, "train").tolist())
    info = store.subject(subject)
    seen: dict[int, int] = {}
    for number, name in entries:
        where = f"{source}: line {number}: {name!r}"
        match = _TRAIN_NAME.match(name)
        row = int(match.group(1)) - 1 if match else -1
        if not 0 <= row < info.n_train or int(store.nsd_ids[info.train_rows[row]]) != int(
            match.group(2)
        ):
            raise DataError(
                f"{where} is not one of {subject}'s training images; list names as in its "
                "training_split/training_images folder (e.g. train-0001_nsd-00013.png)"
            )
        if row in seen:
            raise DataError(f"{where} is listed twice (also line {seen[row]}); list it once")
        if row not in allowed:
            raise DataError(
                f"{where} is in {subject}'s val or test-val split, which evaluation scores; "
                f"list only images of its train split"
            )
        seen[row] = number
    if len(seen) < MIN_IMAGES:
        raise ConfigError(
            f"{source}: lists {len(seen)} images; adapt needs at least {MIN_IMAGES} "
            "(or none at all: --n-images 0 for the zero-shot model)"
        )
    return np.sort(np.fromiter(seen, dtype=np.int64))


def choose_rows(
    store: Store, subject: str, n_images: int | None, seed: int, val_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded N of the subject's train-split rows (never a row evaluate scores): (train, val).

    ``n_images`` None takes them all; 0 takes none (zero-shot: both arrays empty).
    """
    pool = np.sort(store.split_rows(subject, "train"))
    if n_images is None:
        n_images = pool.size
    if n_images > pool.size:
        raise ConfigError(
            f"--n-images {n_images} is more than the {pool.size} training images of {subject} "
            "in its train split (its val and test-val images are kept for evaluation)"
        )
    if n_images == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty
    if n_images < MIN_IMAGES:
        raise ConfigError(
            f"--n-images must be 0 (zero-shot) or at least {MIN_IMAGES}; got {n_images}"
        )
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    chosen = np.sort(rng.choice(pool, size=n_images, replace=False))
    return split_rows(chosen, subject, seed, val_fraction)


def split_rows(
    chosen: np.ndarray, subject: str, seed: int, val_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """The chosen rows split into those that train and those that validate: (train, val).

    Parameters
    ----------
    chosen : ndarray of int64, shape (N,)
        Sorted training rows.
    subject : str
    seed : int
    val_fraction : float

    Returns
    -------
    (ndarray, ndarray) of int64
    """
    parts = make_splits(chosen.size, (1 - val_fraction, val_fraction, 0.0), seed, key=subject)
    return chosen[parts["train"]], chosen[parts["val"]]
