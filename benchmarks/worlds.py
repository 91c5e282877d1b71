"""Helpers the benchmarks share to report every row on several planted worlds.

* :func:`add_worlds_argument`: ``--worlds`` (default: every registered world);
* :func:`world_dataset`: one world's synthetic dataset and its prepared store;
* :func:`ceiling_score`: a per-vertex ridge on the world's true planted features
  (``truth/features.npy``), fitted on each subject's training images, scored
  on its test images: what a readout could reach with the right features;
* :func:`planted_score`: the score of the noise-free planted signal itself (the
  noise's limit);
* ``python benchmarks/worlds.py [--worlds W ...]``: every world's two limits, no training;
* :func:`print_world_table` and :func:`leave_one_world_out`: a table with a
  column per world and their mean, and for each world the row chosen by the
  mean of the other worlds with its score on the held-out one.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brainencoder.data.layout import HEMIS, read_layout
from brainencoder.data.prepare import PrepareOptions, prepare_store
from brainencoder.data.synthetic import SyntheticConfig, make_synthetic
from brainencoder.data.synthetic_worlds import WORLDS
from brainencoder.evaluation.submission import subject_test_scores
from brainencoder.models.solvers import ridge_cv

ALPHAS = np.logspace(-1, 5, 13)


def add_worlds_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--worlds",
        nargs="+",
        default=None,
        choices=WORLDS.names(),
        help="planted worlds to run on (default: all)",
    )


@dataclass(frozen=True)
class WorldData:
    """One world's dataset (``root``), its truth folder, prepared store and feature cache."""

    name: str
    root: Path
    store: object
    cache: Path

    @property
    def truth(self) -> Path:
        return self.root / "truth"


def world_dataset(tmp: Path, world: str, config: dict, image_size: int) -> WorldData:
    """Write ``world``'s dataset under ``tmp/world`` and prepare its store at ``image_size``."""
    root = make_synthetic(tmp / world / "data", SyntheticConfig(**config, world=world))
    store = prepare_store(
        root, tmp / world / "store", PrepareOptions(image_size=image_size), progress=False
    )
    return WorldData(world, root, store, tmp / world / "cache")


def _features_of(data: WorldData, nsd: np.ndarray) -> np.ndarray:
    """The true planted features of images ``nsd``, 2 x 2 pooled and flattened."""
    feats = np.load(data.truth / "features.npy")
    rows = {int(i): r for r, i in enumerate(np.load(data.truth / "features_nsd.npy"))}
    f = feats[[rows[int(i)] for i in nsd]]
    n, c, g, _ = f.shape
    f = f.reshape(n, c, g // 2, 2, g // 2, 2).mean(axis=(3, 5))
    return f.reshape(n, -1)


def ceiling_score(data: WorldData) -> float:
    """Devkit score (%) of a per-vertex ridge (alpha by 5-fold CV) on the true planted features."""
    scores = []
    for subject in read_layout(data.root).subjects.values():
        fmri = [
            np.load(
                data.root
                / subject.name
                / "training_split"
                / "training_fmri"
                / f"{h}_training_fmri.npy"
            )
            for h in HEMIS
        ]
        y = np.concatenate(fmri, axis=1)
        fit = ridge_cv(_features_of(data, subject.nsd_train), y, ALPHAS)
        pred = fit.predict(_features_of(data, subject.nsd_test))
        n_lh = fmri[0].shape[1]
        pred_h = {"lh": pred[:, :n_lh], "rh": pred[:, n_lh:]}
        scores.append(subject_test_scores(pred_h, data.truth, subject.name)[0])
    return float(np.concatenate(scores).mean())


def planted_score(data: WorldData) -> float:
    """Devkit score (%) of the noise-free planted test signal itself."""
    scores = []
    for subject in read_layout(data.root).subjects.values():
        pred = {h: np.load(data.truth / subject.name / f"{h}_test_signal.npy") for h in HEMIS}
        scores.append(subject_test_scores(pred, data.truth, subject.name)[0])
    return float(np.concatenate(scores).mean())


def world_means(by_world: dict[str, list[float]], worlds: list[str]) -> dict[str, float]:
    """Mean over seeds per world, and ``"mean"`` over the worlds."""
    means = {w: float(np.mean(by_world[w])) for w in worlds if by_world.get(w)}
    means["mean"] = float(np.mean([means[w] for w in worlds if w in means])) if means else np.nan
    return means


def print_world_table(rows: dict[str, dict[str, list[float]]], worlds: list[str]) -> None:
    """A markdown table: a row per label, a column per world (mean +- sd over seeds), the mean."""
    print(f"| {'row':<44} | " + " | ".join(f"{w:>13}" for w in worlds) + " |    mean |")
    print("|" + "---|" * (len(worlds) + 2))
    for label, by_world in rows.items():
        cells = []
        for w in worlds:
            v = np.asarray(by_world.get(w, []))
            cells.append(f"{v.mean():6.2f} +- {v.std():4.2f}" if v.size else f"{'':>13}")
        mean = world_means(by_world, worlds)["mean"]
        print(f"| {label:<44} | " + " | ".join(cells) + f" | {mean:7.2f} |")


def leave_one_world_out(
    rows: dict[str, dict[str, list[float]]], worlds: list[str]
) -> list[dict[str, object]]:
    """For each world: the row chosen by the mean of the other worlds, and its score there.

    Returns one dict per held-out world: ``world``, ``chosen``, ``score`` (the
    chosen row's on the held-out world), ``best`` and ``best_score`` (the row
    best on the held-out world itself).
    """
    out = []
    for held in worlds:
        others = [w for w in worlds if w != held]
        if not others:
            break
        candidates = {k: v for k, v in rows.items() if all(v.get(w) for w in worlds)}
        if not candidates:
            break
        chosen = max(candidates, key=lambda k: world_means(candidates[k], others)["mean"])
        best = max(candidates, key=lambda k: float(np.mean(candidates[k][held])))
        out.append(
            {
                "world": held,
                "chosen": chosen,
                "score": float(np.mean(candidates[chosen][held])),
                "best": best,
                "best_score": float(np.mean(candidates[best][held])),
            }
        )
    return out


def print_leave_one_world_out(rows: dict[str, dict[str, list[float]]], worlds: list[str]) -> list:
    """Print :func:`leave_one_world_out` as a table and return it."""
    view = leave_one_world_out(rows, worlds)
    print("\nleave one world out: the row chosen on the mean of the others, judged on it")
    print("| held-out world | chosen on the others | its score | best on it | best score |")
    print("|---|---|---:|---|---:|")
    for v in view:
        print(
            f"| {v['world']} | {str(v['chosen']).strip()} | {v['score']:.2f} "
            f"| {str(v['best']).strip()} | {v['best_score']:.2f} |"
        )
    return view


def main(argv: list[str] | None = None) -> dict:
    """Print every world's ceiling and planted-signal score (no training)."""
    import tempfile

    parser = argparse.ArgumentParser(description="ceilings of the planted worlds")
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--n-train", type=int, default=150)
    parser.add_argument("--n-test", type=int, default=60)
    add_worlds_argument(parser)
    args = parser.parse_args(argv)
    cfg = dict(n_subjects=args.subjects, n_train=args.n_train, n_test=args.n_test, categories=True)
    out = {}
    print("| world | ceiling: ridge on true features | planted signal (noise limit) |")
    print("|---|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for world in args.worlds or WORLDS.names():
            root = make_synthetic(Path(tmp) / world, SyntheticConfig(**cfg, world=world))
            data = WorldData(world, root, None, Path(tmp) / "cache")
            out[world] = (ceiling_score(data), planted_score(data))
            print(f"| {world} | {out[world][0]:.2f} | {out[world][1]:.2f} |", flush=True)
    return out


if __name__ == "__main__":
    main()
