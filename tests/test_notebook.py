"""The example notebook runs end to end on the synthetic data (its outputs are not committed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import brainencoder as be
from conftest import TINY_TRAIN

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


def test_the_committed_notebook_has_no_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(not c["outputs"] and c["execution_count"] is None for c in code)


@pytest.mark.slow
def test_quickstart_notebook_runs(store, synth_root, tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    run = be.train(None, store=store.path, out=tmp_path / "run", overrides=TINY_TRAIN)
    monkeypatch.setenv("BRAINENCODER_RUN", str(run.path))
    monkeypatch.setenv("BRAINENCODER_IMAGES", str(synth_root / "subj01/test_split/test_images"))
    monkeypatch.setenv("BRAINENCODER_ROI", "FFA-1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "Model(" in text and "1. " in text and "8. " in text  # loaded, ranked 8 images
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the map, drawn inline
