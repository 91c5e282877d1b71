"""A problem found in a dataset: where, what, and whether it blocks training."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..util.errors import printable

__all__ = ["Problem", "ValidationReport", "check_image"]


@dataclass(frozen=True)
class Problem:
    """One problem found in a dataset.

    Attributes
    ----------
    path : Path
        The file or folder the problem is about.
    message : str
        What is wrong and, where useful, what to do.
    blocking : bool
        Whether training cannot proceed while the problem remains.
    """

    path: Path
    message: str
    blocking: bool = True

    def __str__(self) -> str:
        kind = "ERROR" if self.blocking else "WARNING"
        # a file name that is not UTF-8 is shown with \xNN escapes (printing it raw fails)
        return printable(f"{kind} {self.path}: {self.message}")


@dataclass
class ValidationReport:
    """Result of :func:`~brainencoder.data.validate.validate_dataset`."""

    root: Path
    layout: Any  # DatasetLayout, or None where the layout could not be read
    problems: list[Problem]
    rois: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no problem blocks training."""
        return not any(p.blocking for p in self.problems)

    def table(self) -> str:
        """A text table with one row per subject."""
        if self.layout is None:
            return ""
        header = f"{'subject':<9} {'train':>6} {'test':>5} {'lh':>7} {'rh':>7}  ROIs present"
        lines = [header, "-" * len(header)]
        for name, subj in self.layout.subjects.items():
            rois = self.rois.get(name, {})
            roi_text = "; ".join(f"{g}: {', '.join(r) or '-'}" for g, r in rois.items()) or "-"
            lines.append(
                f"{name:<9} {len(subj.train_images):>6} {len(subj.test_images):>5} "
                f"{subj.n_vertices('lh'):>7} {subj.n_vertices('rh'):>7}  {roi_text}"
            )
        return printable("\n".join(lines))  # ROI names come from files too


def check_image(path: Path) -> Problem | None:
    """The problem of an image file that does not decode faithfully to RGB, or None."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    from .images import describe_mode

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                mode = img.mode
                img.verify()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return Problem(path, f"image too large to decode safely ({exc}); downscale it")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return Problem(path, f"cannot decode image ({exc}); replace it with a valid PNG")
    how = describe_mode(mode)
    if how is None:
        return Problem(path, f"image mode {mode} has no faithful RGB rendering; save it as RGB")
    if mode != "RGB":
        return Problem(path, f"image mode {how}", blocking=False)
    return None
