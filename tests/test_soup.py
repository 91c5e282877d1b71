"""Weight soups: uniform and greedy averages of compatible runs."""

from __future__ import annotations

import json

import pytest
import torch

from brainencoder.cli.main import main
from brainencoder.models.modelfile import load_encoder, save_encoder
from brainencoder.runs.soup import average_states, soup_runs
from brainencoder.training.config import load_config
from brainencoder.training.loop import train
from brainencoder.util.errors import ConfigError
from conftest import FAST_TRAIN


@pytest.fixture(scope="module")
def runs(store, tmp_path_factory):
    """Three runs fine-tuned (readout, other seeds and lr) from one phase-1 model."""
    root = tmp_path_factory.mktemp("soup")
    train(load_config(None, [*FAST_TRAIN, f"cache_dir={root / 'c'}"]), store.path, root / "p1")
    out = []
    for seed, lr in ((0, 1e-3), (1, 3e-3), (2, 1e-2)):
        args = ["epochs=2", "batch_size=32", "cache_features=true", f"cache_dir={root / 'c'}"]
        cfg = load_config(None, [*args, f"init_from={root / 'p1'}", f"seed={seed}", f"lr={lr}"])
        train(cfg, store.path, root / f"ft{seed}")
        out.append(root / f"ft{seed}")
    return root, out


def test_greedy_soup_is_never_worse_than_its_best_ingredient(runs, store, tmp_path, capsys):
    _, ingredients = runs
    argv = ["soup", *map(str, ingredients), "--out", str(tmp_path / "greedy")]
    assert main(argv) == 0
    assert "greedy soup of" in capsys.readouterr().out
    summary = json.loads((tmp_path / "greedy" / "soup.json").read_text())
    assert summary["val"] >= summary["best_ingredient_val"]
    best = max(summary["ingredients"], key=lambda i: i["val"])["run"]
    assert summary["kept"][0] == best
    uniform = soup_runs(ingredients, tmp_path / "uniform", greedy=False)
    assert len(uniform["kept"]) == 3
    # the uniform soup's weights are the mean of the ingredients'
    states = [load_encoder(r / "best.safetensors").state_dict() for r in ingredients]
    soup = load_encoder(tmp_path / "uniform" / "best.safetensors").state_dict()
    mean = average_states(states)
    assert all(torch.allclose(soup[k].float(), mean[k].float(), atol=1e-6) for k in mean)
    # a soup is a run: evaluate takes it
    assert main(["evaluate", str(tmp_path / "uniform"), "--split", "val"]) == 0


def test_soup_refuses_incompatible_runs(runs, store, tmp_path):
    root, ingredients = runs
    model = load_encoder(ingredients[1] / "best.safetensors")
    with torch.no_grad():  # as if fitted with another pca_seed
        model.readout.embedding.components.mul_(-1)
    save_encoder(model, tmp_path / "otherpca.safetensors")
    with pytest.raises(ConfigError, match="other frozen tensors .* another pca_seed"):
        soup_runs([ingredients[0], tmp_path / "otherpca.safetensors"], tmp_path / "bad")
    wider = load_config(
        None, [*FAST_TRAIN, f"cache_dir={root / 'c'}", "model.readout.hidden_dim=8"]
    )
    train(wider, store.path, tmp_path / "wider")
    with pytest.raises(ConfigError, match="another architecture"):
        soup_runs([ingredients[0], tmp_path / "wider"], tmp_path / "bad")
    with pytest.raises(ConfigError, match="at least two runs"):
        soup_runs([ingredients[0]], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
