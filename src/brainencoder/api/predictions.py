"""Predicted responses of one subject, with the maps a notebook user reaches for."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.space import HEMIS, GroupSpace
from ..util.errors import DataError, printable

__all__ = ["HemiError", "Prediction"]

# the error of data whose vertices are not the model's (see check_data_space)
_DATA_SPACE = (
    "{path}: {subject} {hemi}: these are not the model's vertices, so its ROI labels would pick "
    "other columns: {diff}; pass as data the folder the model was trained on"
)


class HemiError(DataError, KeyError):
    """``pred[key]`` with a key that is no hemisphere (a KeyError too, as for a mapping)."""

    def __str__(self) -> str:  # one line, not KeyError's quoted repr
        return printable(str(self.args[0]) if self.args else "")


@dataclass
class Prediction:
    """One subject's predicted responses to N images, per hemisphere.

    Attributes
    ----------
    subject : str
    lh, rh : ndarray of float32, shape (N, n_vertices of the subject in that hemisphere)
        In the subject's challenge space (the columns of its fMRI files).
    space : GroupSpace
        The model's vertex space (which fsaverage vertex each column is).
    data : path or None
        The challenge-layout folder (or the exported folder) the model's ROI labels
        come from (for :meth:`roi`).
    lower, upper : dict of str to ndarray of float32, shape (N, n_vertices_hemi), or None
        Per hemisphere, the bounds of a calibrated interval of level :attr:`level`
        (``model.predict(..., interval=0.9)``); None without one.
    level : float or None
        The intervals' nominal coverage (0.9: 90% of measured responses inside).
    labels : dict of str to ndarray, or None
        The images' names (``{"names": ...}``) or rows of an image array
        (``{"rows": ...}``), saved with the predictions by :meth:`save`.

    Examples
    --------
    >>> pred = model.predict(images, subject="subj01")          # doctest: +SKIP
    >>> pred.lh.shape  # (n_images, subj01's lh vertices)        # doctest: +SKIP
    >>> fs = pred.to_fsaverage()["lh"]  # (n_images, n_fsaverage)  # doctest: +SKIP
    >>> pred.roi("FFA-1").mean(1)                                # doctest: +SKIP
    """

    subject: str
    lh: np.ndarray
    rh: np.ndarray
    space: GroupSpace = field(repr=False)
    data: Path | None = None
    lower: dict[str, np.ndarray] | None = field(default=None, repr=False)
    upper: dict[str, np.ndarray] | None = field(default=None, repr=False)
    level: float | None = None
    labels: dict[str, np.ndarray] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.lh.shape[0])

    def __getitem__(self, hemi: str) -> np.ndarray:
        if not isinstance(hemi, str) or hemi not in HEMIS:
            rows = " (an image's row: pred.lh[i], pred.rh[i])" if not isinstance(hemi, str) else ""
            raise HemiError(f"pred[{hemi!r}]: the keys are 'lh' and 'rh'{rows}")
        return self.lh if hemi == "lh" else self.rh

    def both(self) -> np.ndarray:
        """Both hemispheres side by side, lh first: (N, n_lh + n_rh)."""
        return np.concatenate([self.lh, self.rh], axis=1)

    def to_fsaverage(self) -> dict[str, np.ndarray]:
        """Full fsaverage arrays per hemisphere, NaN outside the subject's vertices.

        Returns
        -------
        dict of str to ndarray of float64, shape (N, n_fsaverage)
            ``"lh"`` and ``"rh"`` (163,842 vertices each on fsaverage).
        """
        return {h: self.space.to_fsaverage(self.subject, h, self[h]) for h in HEMIS}

    def plot(
        self,
        image: int | str = "mean",
        title: str | None = None,
        output_file: str | Path | None = None,
        **options: Any,
    ):
        """Draw one image's predicted map (or the mean over images) on the cortex.

        Parameters
        ----------
        image : int or "mean", default="mean"
            Which image's prediction to draw: ``0 .. N - 1`` (negative: from the end).
        title : str, optional
        output_file : path, optional
            Also save the figure there (PNG).
        **options
            ``vmin``, ``vmax``, ``cmap`` of
            :func:`~brainencoder.evaluation.plotting.plot_surface_map`.

        Returns
        -------
        matplotlib.figure.Figure
            Inflated (posterior view) and flat maps of both hemispheres on
            fsaverage5; shown inline in a notebook.

        Raises
        ------
        DataError
            For an image index out of range or neither an integer nor "mean".
        """
        from ..evaluation.plotting import fsaverage5_maps, plot_surface_map

        if not (isinstance(image, str) and image == "mean"):
            image = self._image_index(image)
        pick = (lambda a: a.mean(0)) if image == "mean" else (lambda a: a[image])
        maps = fsaverage5_maps(self.space, self.subject, {h: pick(self[h]) for h in HEMIS})
        label = "mean over images" if image == "mean" else f"image {image}"
        return plot_surface_map(
            maps,
            title or f"{self.subject}: predicted response ({label})",
            "predicted response (z)",
            output_file=output_file,
            **options,
        )

    def _image_index(self, image: Any) -> int:
        """``image`` as an index in ``0 .. N - 1`` (negative counts from the end)."""
        n = len(self)
        valid = f"0..{n - 1} for its {n} images" if n else "none: it holds no image"
        if isinstance(image, (bool, np.bool_)) or not isinstance(image, (int, np.integer)):
            raise DataError(f"image {image!r}: expected an image index ({valid}) or 'mean'")
        if not -n <= int(image) < n:
            raise DataError(
                f"image {int(image)} is out of range for this prediction of {self.subject}: "
                f"valid indices are {valid} (negative ones count from the end), or 'mean'"
            )
        return int(image) % n

    def roi(self, name: str, data: str | Path | None = None) -> np.ndarray:
        """The predictions at the vertices of ROI ``name`` (both hemispheres).

        Parameters
        ----------
        name : str
            An ROI of the challenge's label files (``"FFA-1"``, ``"PPA"``, ``"V1v"``...).
        data : path, optional
            The challenge-layout folder (or a folder written by ``export``) with the
            subject's ROI files
            (default: the data the model's store was prepared from).

        Returns
        -------
        ndarray of float32, shape (N, n_roi_vertices)

        Raises
        ------
        DataError
            For an unknown name (listing the valid ones), when no ROI files are
            known, or when the subject's vertices in ``data`` are not the model's.
        """
        return self.both()[:, self.roi_mask(name, data)]

    def roi_mask(self, name: str, data: str | Path | None = None) -> np.ndarray:
        """Boolean mask over the subject's columns (lh then rh) of ROI ``name``.

        ``data``'s ``all-vertices`` masks of the subject must select the very
        fsaverage vertices of the model's (equal counts are not enough): its ROI
        labels would otherwise pick other vertices' columns.
        """
        from ..core.regions import roi_mask
        from ..experiments.explore import check_data_space
        from ..runs.exported import open_roi_layout

        root = data if data is not None else self.data
        if root is None:
            raise DataError(
                "no ROI label files known for this model (a bare model file): pass data="
                "the challenge-layout folder holding the subject's roi_masks"
            )
        layout = open_roi_layout(root, [self.subject])  # challenge layout or exported folder
        check_data_space(self.space, layout, [self.subject], _DATA_SPACE)
        return roi_mask(layout[self.subject], name)

    def as_dict(self) -> dict[str, Any]:
        """``{"lh": ..., "rh": ...}`` (the predictions ``brainencoder predict`` writes)."""
        return {"lh": self.lh, "rh": self.rh}

    def save(self, path: str | Path) -> list[Path]:
        """Write the predictions as ``brainencoder predict --out`` does (the same bytes).

        Parameters
        ----------
        path : path
            ``FILE.npz``: arrays ``lh``, ``rh`` (N, n_vertices_hemi), with an
            interval also ``lh_lower``, ``lh_upper``, ``rh_lower``, ``rh_upper``
            and ``level``, then the images' ``names`` or ``rows``;
            ``FILE.npy``: ``FILE_lh.npy``, ``FILE_rh.npy`` (and ``FILE_lh_lower.npy``...).
            Written atomically.

        Returns
        -------
        list of Path
            The files written.

        Raises
        ------
        UnsafeOverwriteError
            ``path`` is a folder or ends in neither ``.npz`` nor ``.npy``.

        Examples
        --------
        >>> model.predict(images, subject="subj01", interval=0.9).save("pred.npz")  # doctest: +SKIP
        """
        from ..util.fileio import save_npy_atomic
        from ..util.npzfile import write_npz_atomic
        from ..util.ownership import check_output_file

        path = Path(path)
        check_output_file(path, (".npz", ".npy"))
        arrays: dict[str, Any] = {h: np.asarray(self[h], dtype=np.float32) for h in HEMIS}
        if self.lower is not None and self.upper is not None:
            for h in HEMIS:
                arrays[f"{h}_lower"] = np.asarray(self.lower[h], dtype=np.float32)
                arrays[f"{h}_upper"] = np.asarray(self.upper[h], dtype=np.float32)
            arrays["level"] = np.float64(self.level)
        if path.suffix == ".npz":
            return [write_npz_atomic(path, {**arrays, **(self.labels or {})})]
        arrays.pop("level", None)
        stem = path.with_suffix("")
        files = [Path(f"{stem}_{key}.npy") for key in arrays]
        for file, array in zip(files, arrays.values(), strict=True):
            save_npy_atomic(file, array)
        return files
