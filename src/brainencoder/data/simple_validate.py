"""``brainencoder validate`` of your own experiment's simple layout (see :mod:`.simple_layout`).

Every problem is listed by file, as for the challenge's layout: the
experiment file, each subject's image source, trial table, responses, vertex
indices and ROI files, NaN / inf in the responses of every trial, and
(optionally) that every image file decodes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..util.errors import printable
from .problems import Problem, ValidationReport, check_image
from .simple_checks import read_roi_mapping
from .simple_layout import SimpleLayout, read_simple

__all__ = ["SimpleValidationReport", "validate_simple"]


@dataclass
class SimpleValidationReport(ValidationReport):
    """:class:`~brainencoder.data.validate.ValidationReport` of a simple layout."""

    layout: SimpleLayout | None  # type: ignore[assignment]

    def table(self) -> str:
        """A text table with one row per subject: images, trials, vertices, ROIs."""
        if self.layout is None:
            return ""
        header = (
            f"{'subject':<9} {'train':>6} {'test':>5} {'trials':>7} {'repeated':>8} "
            f"{'lh':>7} {'rh':>7}  ROIs present"
        )
        lines = [header, "-" * len(header)]
        for name, subj in self.layout.subjects.items():
            rois = self.rois.get(name, {})
            roi_text = "; ".join(f"{g}: {', '.join(r) or '-'}" for g, r in rois.items()) or "-"
            lines.append(
                f"{name:<9} {len(subj.train_images):>6} {len(subj.test_images):>5} "
                f"{subj.trial_row.size:>7} {int((subj.n_trials() >= 2).sum()):>8} "
                f"{subj.n_vertices('lh'):>7} {subj.n_vertices('rh'):>7}  {roi_text}"
            )
        return printable("\n".join(lines))


def validate_simple(
    root: str | Path,
    check_images: bool = True,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> SimpleValidationReport:
    """Check a simple-layout experiment and collect every problem.

    Parameters
    ----------
    root : path
        The folder holding ``experiment.json`` and the ``subjXX`` folders.
    check_images : bool, default=True
        Decode-check every image file the trials name (the slowest check).
    progress : callable, optional
        Wraps an iterable to show progress (e.g. ``tqdm``).

    Returns
    -------
    SimpleValidationReport
        ``report.ok`` is False when a problem blocks ``prepare``.
    """
    root = Path(root)
    problems: list[Problem] = []
    layout = read_simple(root, None, problems, check_values=True)
    rois: dict[str, dict[str, list[str]]] = {}
    for subj in layout.subjects.values() if layout else []:
        if not (subj.n_trials() >= 2).any():
            problems.append(
                Problem(
                    subj.trials_path,
                    "every image has one trial: no noise ceiling can be estimated "
                    "(it needs images shown 2 or more times)",
                    blocking=False,
                )
            )
        rois[subj.name] = {}
        for group in subj.roi_groups:
            mapping = read_roi_mapping(subj.root / "rois" / f"{group}.json")
            present = set().union(*(set(subj.roi_labels(group, h).tolist()) for h in ("lh", "rh")))
            rois[subj.name][group] = [mapping[k] for k in sorted(present) if k in mapping and k]
    if check_images and layout is not None:
        paths = [
            subj.image_file(i)
            for subj in layout.subjects.values()
            if not subj.is_array
            for i in range(len(subj.image_keys))
        ]
        with ThreadPoolExecutor() as pool:
            results = pool.map(check_image, paths, chunksize=64)
            if progress is not None:
                results = progress(results, total=len(paths))
            problems += [r for r in results if r is not None]
    return SimpleValidationReport(root, layout, problems, rois)
