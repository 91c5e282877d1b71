"""adapt learns how a new subject differs: its own tuning, pulled toward the group's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainencoder.data.prepare import PrepareOptions, prepare_store
from brainencoder.data.synthetic import SyntheticConfig, make_synthetic
from brainencoder.experiments.adapt import AdaptConfig, adapt
from brainencoder.models.readouts import create_readout
from brainencoder.models.readouts.personal import PersonalAffine, personalize
from brainencoder.runs.load import load_model
from brainencoder.training.config import load_config
from brainencoder.training.loop import train
from conftest import FAST_TRAIN

GROUP = ["subj01", "subj02", "subj03"]
POINT = [
    *[a for a in FAST_TRAIN if "_dim" not in a and "epochs" not in a],
    "model.readout.name=point",
    "model.readout.channels=8",
    "epochs=6",
]


def test_a_personal_subject_leaves_every_other_sample_bit_identical():
    torch.manual_seed(0)
    shapes = [(8, 6, 6), (8, 3, 3)]
    readout = create_readout("point", shapes, ["a", "b"], 20, channels=4).eval()
    with torch.no_grad():
        readout.weight.normal_()
    features = [torch.randn(5, *s) for s in shapes]
    before = readout(features, torch.tensor([0, 1, 0, 1, 1]))
    readout.add_subject("c", like=["a", "b"])
    module = personalize(readout, "c")
    with torch.no_grad():
        module.personal_weight.normal_()
        module.personal_positions.normal_()
    mixed = readout(features, torch.tensor([0, 2, 0, 1, 2]))
    assert torch.equal(mixed[[0, 2, 3]], before[[0, 2, 3]])  # bit-identical, not close
    alone = readout(features, torch.full((5,), 2))
    # the same rows computed in another batch: equal up to float32 summation order
    torch.testing.assert_close(alone[[1, 4]], mixed[[1, 4]], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(alone, readout(features, torch.zeros(5, dtype=torch.long)))
    alone.sum().backward()  # gradients reach the residuals
    assert module.personal_positions.grad.abs().sum() > 0
    # a model file rebuilds the personal subject from the readout's options
    again = create_readout("point", shapes, ["a", "b", "c"], 20, **_options(readout)).eval()
    again.load_state_dict(readout.state_dict())
    assert isinstance(again.per_subject["c"], PersonalAffine)
    assert torch.equal(again(features, torch.tensor([0, 2, 0, 1, 2])), mixed)
    again.remove_subject("c")
    assert again.options.personal_subjects == []


def _options(readout):
    return {k: v for k, v in readout.config().items() if k != "name"}


@pytest.fixture(scope="module")
def differing(tmp_path_factory):
    """A world whose subjects differ per vertex; a point group model of subj01-03."""
    root = tmp_path_factory.mktemp("differing")
    cfg = SyntheticConfig(
        n_subjects=3,
        held_out=1,
        n_train=150,
        n_test=12,
        n_vertices=150,
        image_size=48,
        world="subjects",
    )
    data = make_synthetic(root / "data", cfg)
    options = PrepareOptions(image_size=32)
    group = prepare_store(data, root / "group", options, subjects=GROUP, progress=False)
    held = prepare_store(data, root / "held", options, subjects=["subj04"], progress=False)
    train(load_config(None, [*POINT, f"cache_dir={root / 'cache'}"]), group.path, root / "run")
    return held, root


def test_adapt_learns_what_the_subject_does_differently(differing, tmp_path):
    held, root = differing
    config = AdaptConfig(cache_dir=str(root / "cache"))  # 5 folds, their fits' mean kept
    summary = adapt(root / "run", held.path, "subj04", tmp_path / "ad", config=config)
    zero = summary["heldout/zero_shot_pearson_median"]
    adapted = summary["heldout/adapted_pearson_median"]
    # on the subject's val split (never trained on): its own tuning beats the group's
    # prediction at its vertices by a clear margin (0.02 in median r)
    assert adapted > zero + 0.02, (zero, adapted, summary["pull_scores"])
    assert summary["pull"] in config.pulls and summary["personal_tuning"]
    model = load_model(tmp_path / "ad")
    module = model.readout.per_subject["subj04"]
    columns = torch.from_numpy(model.space.subject_columns("subj04"))
    moved = module.residual("positions").index_select(1, columns).abs().mean()
    assert moved > 0 and np.isfinite(float(moved))


def test_the_l2_pull_holds_the_tuning_at_the_group_and_is_chosen_on_val(differing, tmp_path):
    held, root = differing
    norms = {}
    for pull in (0.0, 1e4):
        # one fit (folds=0): the mean of fold fits would shrink the free residuals too
        config = AdaptConfig(cache_dir=str(root / "cache"), epochs=3, pulls=[pull], folds=0)
        adapt(root / "run", held.path, "subj04", tmp_path / f"p{pull:g}", 40, config=config)
        module = load_model(tmp_path / f"p{pull:g}").readout.per_subject["subj04"]
        norms[pull] = sum(float(r.detach().pow(2).sum()) for r in module.residuals())
    # a strong pull keeps the residuals near zero (the group's tuning); none lets them move.
    # Adam's first steps move every residual by about the lr whatever the pull, so the
    # strong pull's residuals are not 0: measured 0.03x the free ones; 0.1x asserted
    assert norms[0.0] > 0 and norms[1e4] < 0.1 * norms[0.0], norms
    config = AdaptConfig(cache_dir=str(root / "cache"), epochs=3, pulls=[0.0, 1e4])
    summary = adapt(root / "run", held.path, "subj04", tmp_path / "both", 40, config=config)
    scores = summary["pull_scores"]
    assert set(scores) == {"0", "10000"} and summary["val/pearson_median"] == max(scores.values())
    assert summary["pull"] == float(max(scores, key=scores.get))
