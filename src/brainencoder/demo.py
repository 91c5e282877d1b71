"""The end-to-end demo on the embedded synthetic dataset (``brainencoder demo``)."""

from __future__ import annotations

import logging
from pathlib import Path

from .data.layout import validate_dataset
from .data.store import prepare_store
from .data.synthetic import SyntheticConfig, make_synthetic
from .errors import BrainEncoderError

__all__ = ["run_demo"]

logger = logging.getLogger(__name__)


def run_demo(out: str | Path, seed: int = 0) -> dict[str, Path]:
    """Synthesize, validate and prepare a dataset (later steps train and submit).

    Parameters
    ----------
    out : path
        Folder for every output of the demo (reused when it already holds one).
    seed : int, default=0

    Returns
    -------
    dict of str to Path
        Where each output is.
    """
    out = Path(out)
    data = out / "data"
    if not (data / "truth" / "synthetic.json").exists():
        if data.exists():
            raise BrainEncoderError(f"{data} holds an incomplete dataset; remove {out} and rerun")
        print(f"[demo] writing synthetic dataset to {data}")
        make_synthetic(data, SyntheticConfig(seed=seed))
    report = validate_dataset(data)
    print(report.table())
    if not report.ok:
        raise BrainEncoderError(
            "the synthetic dataset failed validation:\n" + "\n".join(map(str, report.problems))
        )
    store = prepare_store(data, out / "store")
    print(store.summary())
    return {"data": data, "truth": data / "truth", "store": store.path}
