"""The end-to-end demo on the embedded synthetic dataset (``brainencoder demo``).

synth -> validate -> prepare -> train phase 1 (feature cache) -> train phase 2
-> pixel-ridge reference -> evaluate (the test set, against the planted truth)
-> figures -> submission zips (single model and a three-run ensemble), scored
against the truth -> adapt the phase-1 model to a held-out subject from 100
images, next to a ridge on the same images -> explore: which test images drive
the planted face patch more than the place patch -> compare phase 1, phase 2,
the ridge and the ensemble on the test split -> the run report. Steps whose
outputs exist are reused, so a rerun is quick.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ..util.errors import BrainEncoderError
from .options import add_seed

if TYPE_CHECKING:
    from ..data.synthetic import SyntheticConfig

__all__ = ["add_parser", "run", "run_demo"]

logger = logging.getLogger(__name__)
_CONFIGS = Path(__file__).parents[1] / "configs"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``demo`` command to ``subparsers``."""
    p = subparsers.add_parser("demo", help="run the whole pipeline on a synthetic dataset")
    p.add_argument("out", type=Path, nargs="?", default=Path("demo-output"))
    add_seed(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the demo; print where its outputs are."""
    outputs = run_demo(args.out, seed=args.seed)
    print("[demo] outputs:")
    for name, path in outputs.items():
        shown = ", ".join(map(str, path)) if isinstance(path, list) else path
        print(f"  {name:<13} {shown}")
    return 0


def _score_row(table, subject: str) -> float:
    """Mean noise-normalized score of one subject (or 'all') over all its vertices."""
    sel = table[
        (table.subject == subject)
        & (table.metric == "score")
        & (table.statistic == "mean")
        & (table.hemisphere == "both")
        & (table.roi_group == "all")
    ]
    return float(sel.value.iloc[0])


def run_demo(
    out: str | Path,
    seed: int = 0,
    synthetic: SyntheticConfig | None = None,
    overrides: list[str] | None = None,
) -> dict[str, Path]:
    """Run the whole pipeline on a synthetic dataset.

    Parameters
    ----------
    out : path
        Folder for every output of the demo (reused when it already holds one).
    seed : int, default=0
    synthetic : SyntheticConfig, optional
        Size of the dataset (default: :class:`SyntheticConfig` with ``seed``).
    overrides : list of str, optional
        ``key=value`` overrides of the training configs (tests use them); ``model.*``
        keys go to phase 1 only (phase 2 inherits its architecture).

    Returns
    -------
    dict of str to Path
        Where each output is.
    """
    from ..baselines.ridge import FeatureSpec, fit_ridge_baseline
    from ..data.layout import read_layout
    from ..data.prepare import PrepareOptions, prepare_store
    from ..data.synthetic import SyntheticConfig, make_synthetic
    from ..data.validate import validate_dataset
    from ..evaluation.evaluate import evaluate_run
    from ..evaluation.figures import plot_run
    from ..evaluation.submission import score_submission, write_submission
    from ..inference.images import ensemble_predict
    from ..runs.load import load_model
    from ..runs.run import Run
    from ..training.config import load_config
    from ..training.loop import train

    out = Path(out)
    data = out / "data"
    truth = data / "truth"
    if not (truth / "synthetic.json").exists():
        if data.exists():
            raise BrainEncoderError(f"{data} holds an incomplete dataset; remove {out} and rerun")
        print(f"[demo] 1/11 writing a synthetic dataset to {data}")
        make_synthetic(data, synthetic or SyntheticConfig(seed=seed, held_out=1, categories=True))
    print("[demo] 2/11 validating it")
    report = validate_dataset(data)
    print(report.table())
    if not report.ok:
        raise BrainEncoderError(
            "the synthetic dataset failed validation:\n" + "\n".join(map(str, report.problems))
        )
    import json

    held_out = json.loads((truth / "synthetic.json").read_text()).get("held_out_subjects", [])
    group = [n for n in report.layout.names if n not in held_out]
    print(f"[demo] 3/11 preparing the store (group subjects {', '.join(group)})")
    prep = PrepareOptions(image_size=256 if synthetic is None else 64)
    store = prepare_store(data, out / "store", prep, subjects=group)
    print(store.summary())

    phase2_overrides = [o for o in overrides or [] if not o.startswith("model.")]
    runs = out / "runs"
    phase1, phase2, pixels = runs / "phase1", runs / "phase2", runs / "pixel-ridge"
    # independent runs (each its own random trunk) for the ensemble, the demo's best model
    members = [phase1, runs / "phase1-seed2", runs / "phase1-seed3"]
    for run, run_seed in zip(members, range(seed, seed + len(members))):
        if not Run(run).finished:
            print(
                f"[demo] 4/11 phase 1 (seed {run_seed}): tiny encoder, frozen random "
                "ResNet-18 trunk, feature cache"
            )
            config = load_config(
                _CONFIGS / "demo.yaml",
                [f"seed={run_seed}", f"pca_seed={run_seed}", *(overrides or [])],
            )
            train(config, store.path, run, overwrite=True)
    if not Run(phase2).finished:
        print("[demo] 5/11 phase 2: fine-tune the trunk's last stage from phase 1's best model")
        train(
            load_config(
                _CONFIGS / "demo_phase2.yaml",
                [f"init_from={phase1}", f"seed={seed}", *phase2_overrides],
            ),
            store.path,
            phase2,
            overwrite=True,
        )
    if not Run(pixels).finished:
        print("[demo] 6/11 reference: ridge on downsampled pixels (PCA 100, alpha by CV)")
        n_images = sum(len(store.split_rows(n, "train")) for n in store.names)
        spec = FeatureSpec(kind="pixels", pca_components=min(100, n_images // 2))
        fit_ridge_baseline(store, pixels, spec, overwrite=True)

    print("[demo] 7/11 evaluating on the test set (test responses and noise ceilings planted)")
    tables = {}
    for run in (phase1, phase2, pixels):  # the encoders trained on every training image
        tables[run.name] = evaluate_run(run, "test", store, noise_ceiling=truth)
    figures = plot_run(phase2, "test")
    print("\nnoise-normalized score (%) on the test set, mean over vertices:")
    print(f"{'subject':<9} {'phase 1':>8} {'phase 2':>8} {'pixel ridge':>12}")
    for name in [*store.names, "all"]:
        vals = [_score_row(tables[r], name) for r in ("phase1", "phase2", "pixel-ridge")]
        print(f"{name:<9} {vals[0]:8.2f} {vals[1]:8.2f} {vals[2]:12.2f}")

    print("\n[demo] 8/11 submissions (validated, scored against the synthetic truth)")
    layout = read_layout(data, group)
    zips = {}
    singles = {}
    for label, run_dirs in (
        *((run.name, [run]) for run in members),
        ("phase2", [phase2]),
        ("ensemble", members),
    ):
        models = [load_model(r) for r in run_dirs]
        preds = {n: ensemble_predict(models, s.test_images, n) for n, s in layout.subjects.items()}
        zips[label] = write_submission(preds, layout, out / f"submission-{label}.zip")
        scores = score_submission(zips[label], truth, layout)
        singles[label] = scores["all"]
        per_subject = ", ".join(f"{k} {v:.1f}" for k, v in scores.items() if k.startswith("subj"))
        print(
            f"  {zips[label]}: challenge score {scores['all']:.2f}% ({per_subject}; "
            f"mean over vertices with NC > 0: {scores['all_nc_positive']:.2f}%)"
        )
    best = max(singles[run.name] for run in members)
    print(
        f"  ensemble of the {len(members)} phase-1 runs: {singles['ensemble']:.2f}% vs the "
        f"best single run {best:.2f}% ({singles['ensemble'] - best:+.2f})"
    )
    adapted = _adapt_step(out, data, truth, phase1, held_out, seed)
    adapted.update(_plan_step(out, data, phase1, held_out))
    pages = _experiment_steps(data, truth, runs, store.path, members)
    pages["synthesize"] = _synthesize_step(data, members)
    from ..evaluation.report import write_report

    report = write_report(phase2)
    print("\npages to open in a browser:")
    for label, path in (*pages.items(), ("run report", report)):
        print(f"  {label:<10} {path}")
    return {
        **adapted,
        "data": data,
        "truth": truth,
        "store": store.path,
        "phase1": phase1,
        "phase2": phase2,
        "pixel_ridge": pixels,
        "figures": figures[0].parent,
        "submission": zips["phase2"],
        "ensemble_runs": members,
        "ensemble_submission": zips["ensemble"],
        "report": report,
        **pages,
    }


def _adapt_step(
    out: Path, data: Path, truth: Path, run: Path, held_out: list[str], seed: int
) -> dict[str, Path]:
    """Adapt ``run`` to the first held-out subject from 100 images; ridge on the same images."""
    if not held_out:
        return {}
    import numpy as np

    from ..baselines.ridge import fit_subject_ridge
    from ..data.layout import read_layout
    from ..data.store import Store
    from ..evaluation.evaluate import evaluate_run
    from ..evaluation.submission import subject_test_scores
    from ..experiments.adapt import AdaptConfig, Overwrite, adapt, choose_rows
    from ..runs.run import Run

    subject = held_out[0]
    # adapt draws from the train split (85% of the images), never from val or testval
    n_images = min(100, int(0.8 * len(read_layout(data, [subject])[subject].train_images)))
    target = out / "runs" / f"adapt-{subject}"
    print(f"\n[demo] 9/11 adapt: add {subject} (held out of group training) from {n_images} images")
    if not Run(target).finished:
        replace = Overwrite(out=True)
        adapt(run, data, subject, target, n_images=n_images, seed=seed, overwrite=replace)
    store = Store(target / "store")
    score = _score_row(evaluate_run(target, "test", store, truth), subject)
    zero_run = out / "runs" / f"adapt-{subject}-zero"  # N = 0: the group model at its vertices
    if not Run(zero_run).finished:
        adapt(run, store.path, subject, zero_run, n_images=0, overwrite=Overwrite(out=True))
    zero = _score_row(evaluate_run(zero_run, "test", store, truth), subject)
    train_rows, val_rows = choose_rows(store, subject, n_images, seed, AdaptConfig().val_fraction)
    ridge = fit_subject_ridge(store, subject, np.concatenate([train_rows, val_rows]))
    pred = ridge.predict(store.read_images(store.subject(subject).test_rows), subject)
    ridge_score = float(subject_test_scores(pred, truth, subject)[0].mean())
    print(
        f"  {subject} test score: adapt {score:.2f}% from {n_images} images vs zero-shot "
        f"(N = 0) {zero:.2f}% vs per-subject ridge on the same images {ridge_score:.2f}% "
        f"({target})"
    )
    return {"adapt": target}


def _plan_step(out: Path, data: Path, run: Path, held_out: list[str]) -> dict[str, Path]:
    """Which 100 of the held-out subject's train-split images to show it (``plan``)."""
    if not held_out or not (out / "runs" / f"adapt-{held_out[0]}" / "store").exists():
        return {}
    from ..api.planning import plan
    from ..data.store import Store
    from ..experiments.adapt_images import train_split_names

    subject = held_out[0]
    pool = data / subject / "training_split" / "training_images"
    target = out / f"plan-{subject}.txt"
    store = out / "runs" / f"adapt-{subject}" / "store"
    n = min(100, len(train_split_names(Store(store), subject)))
    print(f"[demo] plan: which {n} of {subject}'s images to show it (for adapt --images)")
    names = plan(run, pool, n=n, out=target, train_split=(store, subject), overwrite=True)
    print(f"  {len(names)} image names, in the order picked: {target}")
    print(f"  where they lie in the pool, and the first of them: {target.with_suffix('.png')}")
    return {"plan": target}


def _experiment_steps(
    data: Path, truth: Path, runs: Path, store: Path, members: list[Path]
) -> dict[str, Path]:
    """explore (faces vs places, checkable against the planted categories) and compare."""
    import pandas as pd

    from ..evaluation.compare import compare_runs
    from ..experiments.explore import explore

    phase2 = runs / "phase2"
    images = data / "subj01" / "test_split" / "test_images"
    print("\n[demo] 10/11 explore: which test images drive the face patch (FFA-1) more than PPA?")
    found = explore(phase2, images, "all", ["FFA-1", "PPA"], phase2 / "explore-faces", top=6)
    categories_file = truth / "categories.json"
    if categories_file.exists():
        import json

        category = json.loads(categories_file.read_text())
        ranked = [category[n.split("_nsd-")[1][:5]] for n in pd.read_csv(found["ranking"]).image]
        print(f"  planted category of the top 6: {', '.join(ranked[:6])}")
        print(f"  planted category of the bottom 6: {', '.join(ranked[-6:])}")
    print("[demo] 11/11 compare phase 1, phase 2, pixel ridge and the ensemble on the test split")
    compared = compare_runs(
        [runs / "phase1", phase2, runs / "pixel-ridge", list(members)],
        phase2 / "compare",
        split="test",
        store=store,
        noise_ceiling=truth,
    )
    table = pd.read_csv(compared["table"])
    overall = table[(table.subject == "all") & (table.roi == "all")]
    for row in overall[overall.metric.isin(["pearson", "score"])].itertuples():
        name, digits = ("mean r", 4) if row.metric == "pearson" else ("score %", 2)
        print(
            f"  {row.run:<32} {name} {row.value:.{digits}f}  vs phase1 {row.diff:+.{digits}f} "
            f"[{row.ci_low:+.{digits}f}, {row.ci_high:+.{digits}f}]"
        )
    return {"explore": found["page"], "compare": compared["page"]}


def _synthesize_step(data: Path, members: list[Path]) -> Path:
    """Images made for V1v by the phase-1 ensemble, checked against the test images."""
    import pandas as pd

    from ..api.insilico import synthesize

    pool = data / "subj01" / "test_split" / "test_images"
    print("\n[demo] synthesize: 2 images made for V1v of subj01 by the phase-1 ensemble")
    made = synthesize(
        members,
        subject="subj01",
        rois="V1v",
        out=members[0] / "synthesize-V1v",
        n=2,
        pool=pool,
        options={"steps": 16},
    )
    table = pd.read_csv(made["table"])
    print(
        f"  kept {int(table.kept.sum())} of {len(table)} (each kept only if the run that did "
        f"not make it predicts it above its best test image): {made['page']}"
    )
    return made["page"]
