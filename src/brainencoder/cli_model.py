"""Commands that need a model: pca, train, evaluate, predict, submit, plot, report, baseline."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_model_commands"]


def _resolve_config(name: str) -> Path | None:
    """A YAML path, or the name of a packaged config (``phase1``, ``demo``...)."""
    if name in ("", "none"):
        return None
    path = Path(name)
    if path.exists():
        return path
    packaged = Path(__file__).parent / "configs" / f"{name.removesuffix('.yaml')}.yaml"
    if packaged.exists():
        return packaged
    from .errors import ConfigError

    available = sorted(p.stem for p in packaged.parent.glob("*.yaml"))
    raise ConfigError(f"config {name!r} is neither a file nor a packaged config ({available})")


def _cmd_pca(args: argparse.Namespace) -> int:
    from .data.store import Store
    from .pca import fit_group_pca

    n = args.components if args.components == "auto" else int(args.components)
    pca = fit_group_pca(Store(args.store), n, seed=args.seed)
    pca.save(args.out)
    ratio = pca.explained_variance.sum()
    print(
        f"wrote {args.out}: {pca.components.shape[0]} components x "
        f"{pca.components.shape[1]} vertices from {pca.n_samples} rows "
        f"(explained variance sum {ratio:.1f})"
    )
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .train.config import load_config
    from .train.loop import train

    config = load_config(_resolve_config(args.config), args.overrides)
    summary = train(config, args.store, args.out, resume=args.resume, overwrite=args.overwrite)
    print(json.dumps(summary, indent=2))
    return 0


def add_model_commands(sub: argparse._SubParsersAction) -> None:
    """Register the model commands on the subparsers ``sub``."""
    p = sub.add_parser("pca", help="fit the group PCA of a store's training fMRI")
    p.add_argument("store", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--components", default="2048", help="number of components or 'auto'")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_pca)

    p = sub.add_parser("train", help="train an encoder (phase 1 or 2)")
    p.add_argument("config", help="YAML file or packaged config name (phase1, phase2, demo)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. lr=1e-3")
    p.add_argument("--store", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.set_defaults(func=_cmd_train)
