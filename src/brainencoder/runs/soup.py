"""``brainencoder soup``: average the weights of compatible runs (model soups).

Wortsman et al. 2022: runs fine-tuned from one starting model (same
architecture, same frozen PCA embedding, same vertex space) can be averaged
weight by weight. The uniform soup averages every ingredient; the greedy soup
sorts the ingredients by validation score and adds each one only if the
averaged model's validation score does not drop, so it is never worse on the
validation split than its best ingredient. The result is an ordinary run
folder (``best.safetensors``, ``config.yaml``, ``soup.json``) that
``evaluate``, ``predict``, ``submit`` and ``report`` take like any run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from ..data.store import Store
from ..util.errors import ConfigError

__all__ = ["average_states", "soup_runs"]

logger = logging.getLogger(__name__)


def average_states(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Mean of floating-point tensors; other tensors (counters, labels) must agree.

    Parameters
    ----------
    states : sequence of state dicts with the same keys and shapes

    Returns
    -------
    dict of str to Tensor
    """
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            out[key] = torch.stack([s[key].float() for s in states]).mean(0).to(first.dtype)
        else:
            out[key] = first.clone()
    return out


def _check_compatible(models: Sequence, runs: Sequence[Path]) -> None:
    """Same architecture, vertex space and frozen buffers (the PCA embedding), or an error."""
    first, ref = models[0], models[0].state_dict()
    statistics = ("running_mean", "running_var", "num_batches_tracked")  # averaged like weights
    frozen = [n for n, _ in first.named_buffers() if not n.endswith(statistics)]
    for run, model in zip(runs[1:], models[1:]):
        if model.config != first.config or not model.space.same_as(first.space):
            raise ConfigError(
                f"{run} is not compatible with {runs[0]}: another architecture or vertex "
                "space; soups average runs of one model trained on one dataset"
            )
        state = model.state_dict()
        if state.keys() != ref.keys():
            raise ConfigError(f"{run}: other weights than {runs[0]}; cannot average them")
        differ = sorted(k for k in frozen if k in ref and not torch.equal(state[k], ref[k]))
        if differ:
            raise ConfigError(
                f"{run} has other frozen tensors than {runs[0]} (e.g. {differ[0]}: another "
                "pca_seed or pca_file); soups need runs that share their frozen parts, e.g. "
                "phase-2 runs fine-tuned from one phase-1 model"
            )


def soup_runs(
    runs: Sequence[str | Path],
    out: str | Path,
    greedy: bool = True,
    store: str | Path | None = None,
    overwrite: bool = False,
    trust_splits: bool = False,
) -> dict:
    """Average the best models of several runs into a new run folder.

    Parameters
    ----------
    runs : sequence of path
        Run folders (or model files) of compatible runs.
    out : path
        New run folder.
    greedy : bool, default=True
        Greedy soup by validation score (else the uniform soup).
    store : path, optional
        Store whose val split scores the ingredients (default: the first run's).
    overwrite : bool, default=False
    trust_splits : bool, default=False
        Accept ingredients that record no training splits (older or foreign
        files) as held out on val (see :func:`.provenance.check_held_out`).

    Returns
    -------
    dict
        What ``soup.json`` holds: ingredients with their val scores, the ones
        kept, the soup's val score.
    """
    from ..inference.store import split_stats, summarize_stats
    from ..models.encoder import Encoder
    from .load import load_model
    from .provenance import check_held_out, merge_records, read_record
    from .run import Run

    runs = [Path(r) for r in runs]
    out = Path(out)
    if len(runs) < 2:
        raise ConfigError("a soup needs at least two runs")
    Run.check_target(out, runs, overwrite)
    store = Store(store if store is not None else Run(runs[0]).store_path())
    for run in runs:
        if run.is_dir():
            Run(run).check_store(store)
        # the ingredients are scored on val
        check_held_out(run, "val", [(n, store) for n in store.names], trust_splits)
    models = [load_model(r) for r in runs]
    if not all(isinstance(m, Encoder) for m in models):
        raise ConfigError("soups average encoders; ridge runs have no weights to average")
    _check_compatible(models, runs)
    states = [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
    soup = models[0]

    def score(state: dict[str, torch.Tensor]) -> float:
        soup.load_state_dict(state)
        return summarize_stats(split_stats(soup.eval(), store, "val"), "val")["val/r2_median"]

    scores = [score(s) for s in states]
    order = sorted(range(len(runs)), key=lambda i: -scores[i])
    if greedy:
        kept = [order[0]]
        best = scores[order[0]]
        for i in order[1:]:
            trial = score(average_states([states[j] for j in [*kept, i]]))
            logger.info("greedy soup: adding %s gives %.4f (now %.4f)", runs[i], trial, best)
            if trial >= best:
                kept.append(i)
                best = trial
    else:
        kept = list(range(len(runs)))
    final = average_states([states[j] for j in kept])
    value = best if greedy else score(final)  # greedy: this average was scored when kept
    soup.load_state_dict(final)
    records = [read_record(runs[j]) for j in kept]
    soup.training_record = merge_records(records, ["val"] if greedy else [])
    summary = {
        "kind": "greedy" if greedy else "uniform",
        "metric": "val/r2_median",
        "ingredients": [{"run": str(r), "val": s} for r, s in zip(runs, scores)],
        "kept": [str(runs[j]) for j in kept],
        "val": value,
        "best_ingredient_val": max(scores),
    }
    source = Run(runs[0]) if runs[0].is_dir() else None
    with Run.build(out, runs, overwrite=overwrite) as run:
        run.save_model(soup, {"store_image_size": str(store.image_size)})
        has_config = source is not None and (runs[0] / "config.yaml").exists()
        settings = source.config if has_config else {}
        settings.pop("run", None)  # the first ingredient's settings, under a header of its own
        run.write_header("encoder", store, settings, soup_of=[str(r) for r in runs])
        run.write_json("soup.json", summary)
        run.write_summary({"finished": True, "soup": summary})
    return summary
