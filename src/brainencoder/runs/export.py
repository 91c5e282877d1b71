"""``brainencoder export``: a trained model as a folder to upload to a model hub as it is.

The folder (layout in :mod:`.exported`) holds every member's model file
(safetensors: weights, config, group space and the training record
``trained_on``), each subject's vertex masks and ROI labels with their names
(``.npy`` and JSON, read from the challenge-layout data the run's store was
prepared from), a manifest and a model card (:mod:`.card`). Loading it needs
neither the store nor the challenge's files: :func:`~brainencoder.runs.load.load_model`
and ``be.load`` take the folder, or its hub name ``hf:ORG/NAME`` once cached.

Nothing machine-specific is written: paths in a model header (a trunk's
weights file or folder) keep only their last part, and every text written
is checked for this machine's paths. The folder is written aside and moved
into place when complete (:func:`~brainencoder.util.ownership.build_owned`);
an existing one is replaced only with ``overwrite`` and only when brainencoder
exported it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.space import HEMIS
from ..models.modelfile import RECORD_KEY, loaded_record, read_metadata, record_metadata
from ..util.errors import CheckpointError, ConfigError, DataError
from ..util.fileio import atomic_path, save_npy_atomic, write_bytes_atomic, write_json_atomic
from ..util.ownership import build_owned, check_replaceable
from ..util.version import __version__
from . import card
from .exported import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    ROIS,
    is_export,
    is_plain_name,
    member_file_name,
    open_roi_layout,
    read_manifest,
)
from .hub import resolve_source
from .load import load_model, model_file, read_files
from .provenance import merge_records
from .run import PathLike, Run

__all__ = ["DEFAULT_DATASETS", "DEFAULT_LICENSE", "export_model"]

logger = logging.getLogger(__name__)

DEFAULT_LICENSE = "other"
DEFAULT_DATASETS = ("algonauts-2023",)


@dataclass
class _Member:
    """One model of the export: its name, model file and where it came from."""

    name: str
    file: Path
    run: Path | None = None  # a run folder: its config, store, scores
    export: Path | None = None  # an exported folder: its ROI files


def _members(sources: Sequence[Path]) -> list[_Member]:
    members: list[_Member] = []
    for source in sources:
        if not source.exists():
            raise DataError(f"{source}: no such run folder, model file or exported folder")
        if is_export(source):
            manifest = read_manifest(source)
            members += [
                _Member(n, f, None, source) for n, f in zip(manifest.members, manifest.files)
            ]
        elif source.is_dir():
            if not Run(source).finished:
                raise CheckpointError(
                    f"{source}: the run has not finished (no summary.json); export a finished run"
                )
            members.append(_Member(source.name, model_file(source), source))
        else:
            members.append(_Member(source.stem, source))
    seen: set[str] = set()
    for i, member in enumerate(members):  # unique plain names: the manifest's member names
        base = "".join(
            c if c.isascii() and (c.isalnum() or c in "_.-") else "-" for c in member.name
        )
        base = base.lstrip("_.-").rstrip(".")[:56] or "model"
        member.name = base if base not in seen else f"{base}-{i + 1}"
        seen.add(member.name)
    return members


def _portable_metadata(meta: dict[str, str]) -> dict[str, str]:
    """A model header with paths of this machine cut to their last part (never read on load)."""
    out = dict(meta)
    for key in ("config", "spec"):
        try:
            config = json.loads(out[key]) if key in out else None
        except ValueError:
            continue
        if not isinstance(config, dict):
            continue
        _portable_trunk(config)
        for entry in config.get("trunks") or []:  # several trunks: each names its own
            if isinstance(entry, dict):
                _portable_trunk(entry)
        out[key] = json.dumps(config)
    return out


def _portable_trunk(config: dict) -> None:
    """Cut one trunk's local paths (weights, folder, checkpoint) to their last part."""
    if config.get("trunk_weights"):
        config["trunk_weights"] = Path(str(config["trunk_weights"])).name
    trunk = config.get("trunk")
    if isinstance(trunk, str) and trunk.startswith("hf:") and not _is_hub_id(trunk[3:]):
        config["trunk"] = "hf:" + Path(trunk[3:].rstrip("/")).name
    kwargs = config.get("trunk_kwargs")
    if isinstance(kwargs, dict) and kwargs.get("checkpoint_path"):
        kwargs["checkpoint_path"] = Path(str(kwargs["checkpoint_path"])).name


def _is_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith(("/", ".", "~")) and "\\" not in name


def _records(metas: list[dict[str, str]], sources: list[Path]) -> list[dict[str, str]]:
    """Every member with the record of the ensemble: the splits any member trained on.

    A held-out check reads one member's record (the first), so each carries
    the union; a member that records nothing makes the ensemble record nothing.
    """
    records = [loaded_record(m, s) for m, s in zip(metas, sources)]
    if all(r == records[0] for r in records):
        return metas
    merged = merge_records(records)
    out = []
    for meta in metas:
        meta = {k: v for k, v in meta.items() if k != RECORD_KEY}
        out.append({**meta, **record_metadata(merged)})
    return out


def _roi_sources(member: _Member, subject: str) -> list[Any]:
    """Where a subject's ROI files may be for a member: its export, its store's data, its base.

    An error (a store that is gone) stands in the list for the message.
    """
    if member.export is not None:
        return [member.export]
    if member.run is None:
        return []
    run = Run(member.run)
    try:
        found: list[Any] = [
            s.manifest.get("source", {}).get("root") for _, s in run.subject_stores([subject])
        ]
    except CheckpointError as exc:
        found = [exc]
    try:
        adapted = run.header.get("adapted_from")  # adapted from an exported folder
    except CheckpointError:
        adapted = None
    return found + ([adapted] if isinstance(adapted, str) and is_export(adapted) else [])


def _subject_rois(space: Any, members: list[_Member], data: PathLike | None) -> dict[str, Any]:
    """Each subject's ROI files (a layout's subject), with the model's very vertices."""
    out: dict[str, Any] = {}
    for subject in space.subjects:
        candidates: list[Any] = [data] if data is not None else []
        for member in members if data is None else []:
            candidates += _roi_sources(member, subject)
        reasons = []
        for root in candidates:
            if isinstance(root, Exception) or root is None:
                reasons += [str(root)] if root is not None else []
                continue
            try:
                layout = open_roi_layout(root, [subject])
            except DataError as exc:
                if data is not None:
                    raise
                reasons.append(str(exc))
                continue
            for hemi in HEMIS:
                diff = space.vertex_difference(subject, hemi, layout[subject].masks[hemi])
                if diff is not None:
                    raise DataError(
                        f"{layout[subject].roi_dir}: {subject}'s {hemi} vertices there are not "
                        f"the model's ({diff}), so its ROI labels would pick other columns; "
                        "pass --data with the data the model was trained on"
                    )
            out[subject] = layout[subject]
            break
        else:
            why = f" ({reasons[-1]})" if reasons else ""
            raise DataError(
                f"{subject}: no ROI label files found for it{why}; pass --data DATA_ROOT, the "
                f"challenge-layout folder holding {subject}/roi_masks (or a folder exported "
                "with it)"
            )
    return out


def _write_rois(work: Path, subject: Any, space: Any) -> list[str]:
    """``rois/SUBJ/``: masks, challenge-space labels and names; returns its ROI groups."""
    folder = work / ROIS / subject.name
    folder.mkdir(parents=True)
    masks = space.fsaverage_masks(subject.name)
    for hemi in HEMIS:
        save_npy_atomic(folder / f"{hemi}.all-vertices_fsaverage_space.npy", masks[hemi])
    groups = []
    for group in subject.roi_groups:
        if not is_plain_name(group):
            raise DataError(f"{subject.roi_dir}: ROI group {group!r} is not a plain name")
        mapping = subject.load_mapping(group)
        for hemi in HEMIS:
            labels = subject.load_rois(group, hemi)
            small = labels.size == 0 or np.abs(labels).max() < 2**31
            path = folder / f"{hemi}.{group}_challenge_space.npy"
            save_npy_atomic(path, labels.astype(np.int32 if small else np.int64))
        write_json_atomic(folder / f"mapping_{group}.json", {str(k): v for k, v in mapping.items()})
        groups.append(group)
    return groups


def _check_portable(texts: dict[str, str], private: Sequence[str]) -> None:
    """Refuse a text that names a path of this machine (the folder is shared as it is)."""
    for what, text in texts.items():
        for path in private:
            if re.search(rf"(?<![\w.:/-]){re.escape(path)}(?![\w.-])", text):
                raise ConfigError(
                    f"{what} would name {path}, a path of this machine; an exported folder "
                    "is shared as it is: remove it from the model's header or the run's files"
                )


def export_model(
    runs: Sequence[PathLike],
    out: PathLike,
    data: PathLike | None = None,
    repo_id: str | None = None,
    license: str = DEFAULT_LICENSE,
    datasets: Sequence[str] = DEFAULT_DATASETS,
    tags: Sequence[str] = (),
    overwrite: bool = False,
) -> Path:
    """Write the exported folder of ``runs`` (several: their ensemble) to ``out``.

    Parameters
    ----------
    runs : sequence of path
        Finished run folders, model files or exported folders (or ``hf:ORG/NAME``).
    out : path
        The folder to write (written aside, moved into place when complete).
    data : path, optional
        The challenge-layout data (or an exported folder) with the subjects' ROI
        files; default: the data each run's store was prepared from.
    repo_id : str, optional
        ``ORG/NAME`` the folder will be uploaded as (the card's loading lines).
    license : str, default="other"
        The card's ``license`` field.
    datasets : sequence of str, default=("algonauts-2023",)
        The card's ``datasets`` field.
    tags : sequence of str, default=()
        Tags added to the card's own.
    overwrite : bool, default=False
        Replace ``out`` when brainencoder exported it (never anything else).

    Returns
    -------
    Path
        ``out``.
    """
    from safetensors.torch import load_file, save_file

    out = Path(out)
    if repo_id is not None and not _is_hub_id(repo_id):
        raise ConfigError(f"--repo-id {repo_id!r}: a hub repository is named ORG/NAME")
    sources = [resolve_source(r) for r in runs]
    if not sources:
        raise ConfigError("export needs at least one run")
    members = _members(sources)
    inputs: list[Any] = [data, *(s if is_export(s) else None for s in sources)]
    inputs += [f for s in sources if not is_export(s) for f in read_files(s)]
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        check_replaceable(out, "export", inputs)  # never what brainencoder did not export
        if not overwrite:
            raise CheckpointError(
                f"{out} already holds an exported model; pass --overwrite to replace it"
            )
    check_replaceable(out, "export", inputs)  # before any work: never an input, nor cwd
    space, sizes = None, set()
    for member in members:  # checked as every model is loaded; one at a time
        model = load_model(member.file)
        if space is not None and not model.space.same_as(space):
            raise DataError(
                f"{member.file}: its subjects or vertices are not those of {members[0].file}; "
                "export an ensemble of runs of one dataset"
            )
        space = space or model.space
        sizes.add(getattr(model, "store_image_size", None))
        del model
    if len(sizes - {None}) > 1:
        raise DataError(
            f"the runs were trained on stores of different image sizes {sorted(sizes - {None})} "
            "px, so they cannot predict from the same decoded images; export an ensemble of "
            "runs trained on one store"
        )
    rois = _subject_rois(space, members, data)
    metas = _records(
        [_portable_metadata(read_metadata(m.file)) for m in members], [m.file for m in members]
    )
    n = len(members)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "brainencoder_version": __version__,
        "members": [
            {"name": m.name, "file": member_file_name(i, n)} for i, m in enumerate(members)
        ],
        "subjects": {},
    }
    private = _private_paths(sources, data, rois)
    with build_owned(out, "export", inputs) as work:
        for i, (member, meta) in enumerate(zip(members, metas)):
            _check_portable({f"{member.file} (header)": json.dumps(meta)}, private)
            with atomic_path(work / member_file_name(i, n), suffix=".safetensors") as tmp:
                save_file(load_file(str(member.file)), str(tmp), metadata=meta)
        for subject in space.subjects:
            groups = _write_rois(work, rois[subject], space)
            manifest["subjects"][subject] = {"roi_groups": groups}
        parts = [(m.name, m.file, meta, m.run) for m, meta in zip(members, metas)]
        title = repo_id.split("/")[1] if repo_id else out.name
        front = card.front_matter(license, datasets, tags)
        text = card.export_card(parts, space, manifest, rois, title, repo_id, front)
        _check_portable(
            {f"{out}/README.md": text, f"{out}/{MANIFEST}": json.dumps(manifest)}, private
        )
        write_json_atomic(work / MANIFEST, manifest)
        write_bytes_atomic(work / "README.md", text.encode())
        open_roi_layout(work)  # reads back what was written, as a receiver would
    return out


def _private_paths(
    sources: Sequence[Path], data: PathLike | None, rois: dict[str, Any]
) -> list[str]:
    """This machine's paths that must not appear in the folder."""
    paths = {str(Path.cwd()), str(Path.home())}
    for path in [*sources, *([data] if data is not None else [])]:
        paths |= {str(Path(path).absolute()), str(Path(path).resolve())}
    for subject in rois.values():
        paths.add(str(Path(subject.roi_dir).resolve().parent))
    return sorted(p for p in paths if len(p) > 4)
