"""The model card of an exported folder: ``README.md`` in the Hugging Face convention.

YAML front matter (``library_name: brainencoder``, ``tags``, ``license``,
``datasets``) written with :func:`yaml.safe_dump`, then a Markdown body
rendered from :data:`TEMPLATE` with jinja2: the trunk and readout, the subjects
and their vertices, how each member was trained (its run's ``config.yaml``),
its scores with the split they were measured on (its ``eval/SPLIT`` folders,
else the validation metric of ``summary.json``), how to load it, and the
citation of the original entry. Nothing machine-specific is written: a value
that names a path keeps only its last part.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ..util.errors import BrainEncoderError
from ..util.version import __version__
from .card_template import TEMPLATE

__all__ = [
    "DEFAULT_TAGS",
    "TEMPLATE",
    "export_card",
    "front_matter",
    "member_facts",
    "model_facts",
    "portable",
    "render_card",
]

#: the tags of every card (``export --tag`` adds more)
DEFAULT_TAGS = ("brainencoder", "neuroscience", "fmri", "encoding-model", "algonauts-2023")

# the settings of config.yaml the card shows (train, adapt, ridge baselines), in this order
_TRAINING_KEYS = (
    "encoder",
    "train_on",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "loss",
    "train_trunk",
    "lora",
    "init_from",
    "seed",
    "solver",
    "split",
)
_ADAPT_KEYS = ("subject", "n_images", "epochs", "lr", "seed")
_HEADER_KEYS = ("brainencoder_version", "git_revision", "torch_version", "world_size")
_COLUMNS = (
    ("score", "mean"),
    ("score_nc_positive", "mean"),
    ("pearson", "mean"),
    ("pearson", "median"),
    ("r2", "median"),
)


def portable(value: Any) -> str:
    """``value`` as card text; a path keeps only its last part (nothing machine-specific)."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {portable(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "[" + ", ".join(portable(v) for v in value) + "]"
    text = str(value)
    if "/" in text or os.sep in text:
        return Path(text.rstrip("/")).name or text
    return text


def model_facts(name: str, meta: Mapping[str, str]) -> dict[str, str]:
    """Trunk, layers, readout and image size of a member, from its model file's header."""
    config: Any = {}
    for key in ("config", "spec"):
        try:
            config = json.loads(meta.get(key, "null")) or {}
        except ValueError:
            config = {}
        if isinstance(config, dict) and config:
            break
    config = config if isinstance(config, dict) else {}
    readout = config.get("readout")
    if isinstance(readout, dict):
        options = {k: v for k, v in readout.items() if k != "name"}
        readout = f"{readout.get('name')} ({portable(options)})" if options else readout.get("name")
    elif "spec" in meta:
        readout = "ridge regression per vertex"
    trunk = portable(config.get("trunk", "?")) + " (pretrained)" * bool(config.get("pretrained"))
    layers, size = portable(config.get("layers", "?")), config.get("img_size", "?")
    entries = [e for e in config.get("trunks") or [] if isinstance(e, Mapping)]
    if entries:  # model.trunks: every trunk with its own layers
        pretrained = [
            config.get("pretrained") if e.get("pretrained") is None else e["pretrained"]
            for e in entries
        ]
        trunk = " + ".join(
            portable(e.get("trunk", "?")) + " (pretrained)" * bool(p)
            for e, p in zip(entries, pretrained)
        )
        layers = " + ".join(portable(e.get("layers", "?")) for e in entries)
    if config.get("kind") == "pixels":  # a ridge on pixels: no trunk
        trunk, layers = f"none: pixels, PCA {config.get('pca_components', '?')}", "-"
        size = config.get("pixel_size", "?")
    return {
        "name": name,
        "trunk": trunk,
        "layers": layers,
        "readout": portable(readout or "?"),
        "image_size": f"{meta.get('store_image_size', '?')} px stored, {size} px input",
    }


def _training(run: Path) -> list[tuple[str, str]]:
    from .run import Run

    run_ = Run(run)
    try:
        config, header = run_.config, run_.header
    except BrainEncoderError:
        return []
    rows = [(k, portable(config[k])) for k in _TRAINING_KEYS if config.get(k) is not None]
    adapt = config.get("adapt")
    if isinstance(adapt, dict):
        rows += [(f"adapt: {k}", portable(adapt[k])) for k in _ADAPT_KEYS if k in adapt]
    summary = run_.summary()
    for key in ("epochs_run", "best_epoch", "stopped_early"):
        if key in summary:
            rows.append((key, portable(summary[key])))
    rows += [(k, portable(header[k])) for k in _HEADER_KEYS if header.get(k) is not None]
    return rows


def _number(metric: str, value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.2f}" if metric.startswith("score") else f"{number:.4f}"


def _eval_scores(run: Path, subjects: Sequence[str]) -> list[dict[str, Any]]:
    """One table per ``eval/SPLIT/metrics.csv``: per subject (and all), both hemispheres."""
    out = []
    folder = run / "eval"
    for split_dir in sorted(folder.iterdir()) if folder.is_dir() else []:
        path = split_dir / "metrics.csv"
        if not path.is_file():
            continue
        values: dict[tuple[str, str, str], str] = {}
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                if (row.get("hemisphere"), row.get("roi_group"), row.get("roi")) == (
                    "both",
                    "all",
                    "all",
                ):
                    values[(row["subject"], row["metric"], row["statistic"])] = row["value"]
        columns = [c for c in _COLUMNS if any(k[1:] == c for k in values)]
        names = [s for s in [*subjects, "all"] if any(k[0] == s for k in values)]
        if not columns or not names:
            continue
        rows = [
            [name, *(_number(m, values.get((name, m, st), "")) for m, st in columns)]
            for name in names
        ]
        heads = [
            "subject",
            *(f"{m} ({st}{', %' if m.startswith('score') else ''})" for m, st in columns),
        ]
        source = f"`brainencoder evaluate`, eval/{split_dir.name}"
        out.append({"split": split_dir.name, "source": source, "columns": heads, "rows": rows})
    return out


def _summary_scores(run: Path) -> list[dict[str, Any]]:
    """The validation metrics of ``summary.json`` (the best epoch's), when nothing was evaluated."""
    from .run import Run

    try:
        summary = Run(run).summary()
    except BrainEncoderError:
        return []
    found = {k: v for k, v in summary.items() if k.startswith("val/") and isinstance(v, float)}
    if not found:
        return []
    rows = [[k.split("/", 1)[1], _number(k, str(v))] for k, v in found.items()]
    source = "summary.json: the validation images that chose the best epoch"
    return [{"split": "val", "source": source, "columns": ["metric", "value"], "rows": rows}]


def member_facts(
    name: str, meta: Mapping[str, str], run: Path | None, subjects: Sequence[str]
) -> dict[str, Any]:
    """What the card says of one member: its model, training and scores."""
    facts: dict[str, Any] = model_facts(name, meta)
    facts["training"] = _training(run) if run is not None else []
    scores = _eval_scores(run, subjects) if run is not None else []
    facts["scores"] = scores or (_summary_scores(run) if run is not None else [])
    return facts


def render_card(front_matter: Mapping[str, Any], context: Mapping[str, Any]) -> str:
    """The card: YAML front matter, then :data:`TEMPLATE` rendered with ``context``.

    Parameters
    ----------
    front_matter : mapping
        ``library_name``, ``license``, ``tags``, ``datasets``, ...
    context : mapping
        The template's values (a name it uses but is not given is an error).

    Returns
    -------
    str
    """
    import jinja2

    env = jinja2.Environment(
        autoescape=False,  # Markdown, not HTML: table cells are escaped by ``cell``
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["cell"] = lambda v: " ".join(str(v).replace("|", "\\|").split())
    body = env.from_string(TEMPLATE).render(version=__version__, **context)
    while "\n\n\n" in body:
        body = body.replace("\n\n\n", "\n\n")
    head = yaml.safe_dump(dict(front_matter), sort_keys=False, allow_unicode=True)
    return f"---\n{head}---\n\n{body}"


def front_matter(license: str, datasets: Sequence[str], tags: Sequence[str]) -> dict[str, Any]:
    """The card's YAML front matter: ``library_name``, ``license``, ``tags``, ``datasets``."""
    return {
        "library_name": "brainencoder",
        "license": license,
        "tags": list(dict.fromkeys([*DEFAULT_TAGS, *tags])),
        "datasets": list(datasets),
    }


def export_card(
    members: Sequence[tuple[str, Path, Mapping[str, str], Path | None]],
    space: Any,
    manifest: Mapping[str, Any],
    rois: Mapping[str, Any],
    title: str,
    repo_id: str | None,
    front: Mapping[str, Any],
) -> str:
    """The card of an exported folder.

    Parameters
    ----------
    members : sequence of (name, model file, header metadata, run folder or None)
    space : GroupSpace
        The model's vertex space.
    manifest : mapping
        The folder's manifest (its members' files, its subjects' ROI groups).
    rois : mapping of str to RoiFiles
        Each subject's ROI files (for an example ROI name).
    title : str
    repo_id : str or None
        ``ORG/NAME`` on the hub (the loading lines), if known.
    front : mapping
        The front matter (:func:`front_matter`).

    Returns
    -------
    str
    """
    from ..models.modelfile import loaded_record

    record = loaded_record(dict(members[0][2]), members[0][1]) or {}
    subjects = []
    for name in space.subjects:
        entry = record.get("subjects", {}).get(name) or record.get("all") or {}
        splits = entry.get("splits")
        subjects.append(
            {
                "name": name,
                "lh": space.n_subject_vertices(name, "lh"),
                "rh": space.n_subject_vertices(name, "rh"),
                "groups": ", ".join(manifest["subjects"][name]["roi_groups"]) or "none",
                "trained_on": ", ".join(splits) if isinstance(splits, list) else "not recorded",
            }
        )
    facts = [member_facts(n, meta, run, space.subjects) for n, _, meta, run in members]
    files = [(e["file"], f"the model {e['name']} (safetensors)") for e in manifest["members"]]
    files += [
        ("brainencoder.json", "what the folder holds: its members, subjects and ROI groups"),
        ("rois/SUBJ/", "each subject's vertex masks (fsaverage), ROI labels and names"),
    ]
    context = {
        "title": title,
        "members": facts,
        "subjects": subjects,
        "n_vertices": space.n_vertices,
        "n_lh": space.vertices["lh"].size,
        "n_rh": space.vertices["rh"].size,
        "scored": any(f["scores"] for f in facts),
        "repo_id": repo_id,
        "load_name": f"hf:{repo_id}" if repo_id else f"path/to/{title}",
        "example_roi": _example_roi(rois[space.subjects[0]]),
        "files": files,
    }
    return render_card(front, context)


def _example_roi(subject: Any) -> str | None:
    """The first named ROI of a subject's files (the card's example)."""
    for group in subject.roi_groups:
        names = [v for k, v in sorted(subject.load_mapping(group).items()) if k > 0]
        if names:
            return names[0]
    return None
