"""Before/after comparisons of two assessed photos, built from what the web app already keeps.

The worker leaves each assessment's output folder in ``<home>/assessments/<id>/``
(``assessment.json``, ``dots.csv``, ``mask.png``, ``overlay.png``) and the photo in the
store, so a comparison needs no segmentation: :class:`StoredAssessment` reads a folder
back into the few attributes that :func:`pipeline.two_photos.compare.compare_assessments` and
:func:`pipeline.two_photos.compare.write_comparison` use (``metrics.to_dict()``, ``view``,
``calibration.px_per_mm`` / ``.scale.source`` / ``.colour``, ``dots``, ``labels``,
``photo``), and :func:`build_comparison` registers, links and writes the folder that
``smp compare`` writes (``before/``, ``after/``, ``comparison.json``, ``links.csv``,
``side_by_side.png``, ``difference.png``).

The folder is cached in ``<home>/comparisons/<before id>_<after id>/``: it is written
into a temporary folder next to it and renamed when complete, so a half-written folder
is never served and two requests building the same comparison do not collide (the
first rename wins, the other folder is dropped). Ids are integers: no user text in a path.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from pipeline.one_photo.calibration import CalibrationSettings, ColourCorrection, calibrate, no_colour_correction
from pipeline.one_photo.loading import Photo, load_photo
from pipeline.records import PhotoStore
from pipeline.web.jobs import assessment_folder

__all__ = ["ComparisonProblem", "StoredAssessment", "build_comparison", "comparison_folder"]

#: Files of an assessment folder copied into ``before/`` and ``after/`` (the report reads them).
_ASSESSMENT_FILES = ("assessment.json", "dots.csv", "mask.png", "overlay.png")


class ComparisonProblem(ValueError):
    """The comparison cannot be made; the message says why in words for the user."""


def comparison_folder(home: Path, before_assessment_id: int, after_assessment_id: int) -> Path:
    """Where the comparison of two assessments is cached."""
    return Path(home) / "comparisons" / f"{int(before_assessment_id)}_{int(after_assessment_id)}"


# --------------------------------------------------------------------------- the adapter


@dataclass(frozen=True)
class StoredMetrics:
    """The ``metrics`` block of ``assessment.json`` (``PhotoMetrics.to_dict()``'s output)."""

    values: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.values)


@dataclass(frozen=True)
class StoredScale:
    source: str
    px_per_mm: float | None


@dataclass(frozen=True, eq=False)
class StoredCalibration:
    """``scale`` and ``colour`` of a stored assessment (the scale as stored; see
    :meth:`StoredAssessment.from_folder` for the colour correction)."""

    scale: StoredScale
    colour: ColourCorrection

    @property
    def px_per_mm(self) -> float | None:
        return self.scale.px_per_mm


@dataclass(frozen=True, eq=False)
class StoredAssessment:
    """An assessment read back from its output folder and photo: what the comparison uses of
    :class:`pipeline.one_photo.assessment.Assessment`."""

    photo: Photo
    view: str
    calibration: StoredCalibration
    metrics: StoredMetrics
    dots: pd.DataFrame = field(repr=False)
    labels: np.ndarray = field(repr=False)
    doc: dict[str, Any] = field(repr=False, default_factory=dict)

    @classmethod
    def from_folder(
        cls, folder: str | Path, photo: Photo, *, calibration: CalibrationSettings | None = None
    ) -> StoredAssessment:
        """Read ``assessment.json``, ``dots.csv`` and ``mask.png`` of ``folder``; ``photo`` is the
        assessed photo (its pixels must match the mask).

        The colour correction's coefficients are not stored: when the assessment used the
        card, it is fitted again from the photo's card (:func:`pipeline.one_photo.calibration.calibrate`,
        a fraction of a second; no segmentation) and kept if it is of the same kind as the
        stored one; otherwise colours are left uncorrected (only the difference picture's
        tint uses them).
        """
        folder = Path(folder)
        try:
            doc = json.loads((folder / "assessment.json").read_text(encoding="utf-8"))
            dots = pd.read_csv(folder / "dots.csv")
        except (OSError, ValueError) as exc:
            raise ComparisonProblem(f"the assessment files cannot be read ({type(exc).__name__})") from None
        labels = cv2.imread(str(folder / "mask.png"), cv2.IMREAD_UNCHANGED)
        if labels is None or labels.ndim != 2:
            raise ComparisonProblem("the assessment's mask cannot be read")
        if labels.shape != photo.rgb.shape[:2]:
            raise ComparisonProblem("the stored photo does not match its assessment (different size)")
        if not isinstance(doc, dict) or not isinstance(doc.get("metrics"), dict):
            raise ComparisonProblem("the assessment has no metrics")
        cal = raw if isinstance(raw := doc.get("calibration"), dict) else {}
        ppm = cal.get("px_per_mm")
        ppm = float(ppm) if isinstance(ppm, (int, float)) and np.isfinite(ppm) and ppm > 0 else None
        scale = StoredScale(source=str(cal.get("scale_source") or ("none" if ppm is None else "manual")), px_per_mm=ppm)
        colour = no_colour_correction()
        if cal.get("colour_source") == "card":
            try:
                fitted = calibrate(photo.rgb, _card(), calibration).colour
            except Exception:  # noqa: BLE001 - a card that no longer fits: uncorrected colours
                fitted = None
            if fitted is not None and fitted.source == "card" and fitted.model == cal.get("colour_model"):
                colour = fitted
        view = doc.get("photo", {}).get("view") if isinstance(doc.get("photo"), dict) else None
        return cls(
            photo=photo,
            view=str(view or "closeup"),
            calibration=StoredCalibration(scale=scale, colour=colour),
            metrics=StoredMetrics(dict(doc["metrics"])),
            dots=dots,
            labels=labels,
            doc=doc,
        )


def _card() -> Any:
    from data.card import load_card

    return load_card()


# --------------------------------------------------------------------------- building


def _load(store: PhotoStore, photo_path: str | Path) -> Photo:
    from pipeline.one_photo.loading import PhotoError

    try:
        return load_photo(store.path(str(photo_path)))
    except (PhotoError, OSError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise ComparisonProblem(f"the stored photo cannot be loaded ({reason})") from None


def build_comparison(
    home: str | Path,
    store: PhotoStore,
    before_assessment_id: int,
    after_assessment_id: int,
    before_photo_path: str | Path,
    after_photo_path: str | Path,
    *,
    calibration: CalibrationSettings | None = None,
    register_config: Path | None = None,
    register_overrides: tuple[str, ...] = (),
) -> Path:
    """The comparison folder of two assessments (BEFORE is the reference frame), built once.

    ``*_photo_path``: each photo's path in ``store`` (``Photo.stored_path``). Raises
    :class:`ComparisonProblem` when an assessment folder is missing or unreadable. Photos that
    cannot be registered still give a comparison (:func:`pipeline.two_photos.compare.compare_photos`):
    the figures that need no alignment, with a warning saying why and how to retake.
    """
    from pipeline.two_photos.compare import compare_photos, write_comparison
    from pipeline.two_photos.settings import load_register_settings

    home = Path(home)
    final = comparison_folder(home, before_assessment_id, after_assessment_id)
    if (final / "comparison.json").is_file():
        return final
    sources = [assessment_folder(home, i) for i in (before_assessment_id, after_assessment_id)]
    for name, src in zip(("before", "after"), sources):
        if not (src / "assessment.json").is_file():
            raise ComparisonProblem(f"the {name} photo's assessment has no output files: assess it again")

    before = StoredAssessment.from_folder(sources[0], _load(store, before_photo_path), calibration=calibration)
    after = StoredAssessment.from_folder(sources[1], _load(store, after_photo_path), calibration=calibration)
    reg_settings = load_register_settings(register_config, list(register_overrides))
    comparison = compare_photos(before, after, reg_settings)

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        for name, src in zip(("before", "after"), sources):
            (tmp / name).mkdir()
            for file in _ASSESSMENT_FILES:
                if (src / file).is_file():
                    shutil.copyfile(src / file, tmp / name / file)
        write_comparison(comparison, tmp)
        try:
            os.rename(tmp, final)
        except OSError:  # another request finished the same comparison first: keep its folder
            if not (final / "comparison.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
