"""A run's training records, preceded by those of the runs it continued."""

from __future__ import annotations

from pathlib import Path

from ..util.errors import CheckpointError
from .run import Run

__all__ = ["run_history"]


def run_history(run_dir: str | Path, max_depth: int = 16) -> list[tuple[Path, list[dict]]]:
    """A run's training records preceded by those of the runs it was initialized from.

    Follows ``init_from`` (a run folder, or a model file inside one) back while
    the source run still exists, oldest first, so phase 2's learning curves
    show phase 1's epochs too. Loops and missing runs end the chain.

    Parameters
    ----------
    run_dir : path
    max_depth : int, default=16
        At most this many runs.

    Returns
    -------
    list of (run folder, records of its ``metrics.jsonl``)
    """
    chain: list[tuple[Path, list[dict]]] = []
    seen: set[Path] = set()
    current: Path | None = Path(run_dir)
    while current is not None and len(chain) < max_depth:
        resolved = current.resolve()
        if resolved in seen or not (current / "config.yaml").exists():
            break
        seen.add(resolved)
        run = Run(current)
        chain.append((current, run.read_metrics()))
        try:
            source = run.config.get("init_from")
        except CheckpointError:
            break
        if not isinstance(source, str) or not source:
            break
        source_path = Path(source)
        current = source_path if source_path.is_dir() else source_path.parent
    return chain[::-1]
