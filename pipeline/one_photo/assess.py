"""Assessing one photo: the only module that knows the order of the stages.

``load -> calibrate -> segment -> dots -> pigment colour -> flags -> quality -> metrics``

Each stage is a plain function in its own module; :func:`assess_photo` wires them, times
them (``timings_s``) and collects warnings into an :class:`~pipeline.one_photo.assessment.Assessment`
(written by :func:`~pipeline.one_photo.assessment.write_assessment`); :class:`Assessor` holds what
is loaded once. The settings are :mod:`pipeline.one_photo.settings`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from data.card import CardSpec, load_card, paper_rect_mm
from data.flags import FlagSettings, load_flag_settings
from data.geometry import apply_homography, resize_points
from data.metrics import FLAG_NAMES, HAIR, SCALP, photo_metrics
from models.dot_patch import PatchRanker, default_patch_path
from models.dot_ranker import DotRanker, default_ranker_path
from pipeline.one_photo.assessment import Assessment
from pipeline.one_photo.calibration import Calibration, calibrate
from pipeline.one_photo.detect import Detection, DetectSettings, ScaleOutOfRange, detect_dots
from pipeline.one_photo.dots import (
    DotGeometry,
    empty_geometry,
    footprint_mask,
    local_px_per_mm,
    open_skin,
    skin_reference,
)
from pipeline.one_photo.loading import Photo, load_photo
from pipeline.one_photo.pigment import dot_table
from pipeline.one_photo.quality import (
    MaskWobble,
    check_quality,
    mask_wobble,
    second_look,
    second_look_window,
)
from pipeline.one_photo.segment import ModelSegmenter, Segmentation, card_polygon_mask, classical_segmentation
from pipeline.one_photo.settings import AssessSettings, load_assess_settings
from pipeline.runtime import blas_threads

__all__ = ["Assessor", "assess_photo"]


class _Timer:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        yield
        self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t


def _config_hash(settings: AssessSettings, rules: FlagSettings, card: CardSpec, model: dict[str, Any]) -> str:
    blob = json.dumps(
        {
            "assess": settings.model_dump(mode="json"),
            "flags": rules.model_dump(mode="json"),
            "card": card.model_dump(mode="json"),
            "model": model.get("sha256"),
            "precision": model.get("precision"),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _load_patch_ranker(settings: DetectSettings) -> PatchRanker | None:
    """The second look at the pixels (None when ``detect.patch_look`` is off, or for training)."""
    if not settings.patch_look or settings.decision == "floors":
        return None
    ranker = PatchRanker.load(Path(settings.patch_model) if settings.patch_model else default_patch_path())
    if settings.patch_veto is not None:
        ranker = replace(ranker, veto=settings.patch_veto)
    return ranker


def _load_ranker(settings: DetectSettings) -> DotRanker | None:
    """The dot ranker the settings ask for (None under the rules, or for ``floors`` without a file)."""
    if settings.decision == "rules" or (
        settings.decision == "floors" and settings.ranker is None and not default_ranker_path().is_file()
    ):
        return None
    path = Path(settings.ranker) if settings.ranker else default_ranker_path()
    ranker = DotRanker.load(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    ranker = replace(ranker, info={**ranker.info, "sha256": digest})
    if settings.ranker_threshold is not None:
        ranker = replace(ranker, threshold=settings.ranker_threshold)
    return ranker


class Assessor:
    """Holds what is loaded once (model, card, rules) and assesses photos one by one."""

    def __init__(
        self,
        settings: AssessSettings | None = None,
        *,
        rules: FlagSettings | None = None,
        card: CardSpec | None = None,
        detection_sink: Callable[[Detection], None] | None = None,
    ) -> None:
        """``detection_sink``: called with the dot stage's full result (every candidate, its evidence and
        why it was or was not reported) for each photo; for training the ranker and for diagnostics."""
        self.settings = settings or load_assess_settings()
        self.detection_sink = detection_sink
        self.rules = rules or load_flag_settings()
        self.card = card or load_card()
        self.segmenter: ModelSegmenter | None = None
        self.setup_warnings: tuple[str, ...] = ()
        seg = self.settings.segment
        if seg.method == "model":
            from models.inference import resolve_precision

            resolve_precision(seg.precision, seg.device)  # a precision this device cannot run is the user's error
            try:
                self.segmenter = ModelSegmenter(
                    seg.model or None,
                    device=seg.device,
                    threads=seg.threads or None,
                    tile=seg.tile,
                    overlap=seg.overlap,
                    dot_threshold=seg.dot_threshold,
                    precision=seg.precision,
                )
            except (FileNotFoundError, ValueError) as exc:
                if seg.model:  # the user asked for this model: do not quietly use another
                    raise
                self.setup_warnings = (f"segmentation model unavailable ({exc}); using the classical segmenter",)
        self.model_info: dict[str, Any] = (
            self.segmenter.describe()
            if self.segmenter
            else {"name": "classical", "version": "1", "sha256": None, "kind": "classical"}
        )
        self.patch_ranker = _load_patch_ranker(self.settings.detect)
        if self.patch_ranker is not None:
            self.model_info = {
                **self.model_info,
                "dot_patch": {"sha256": self.patch_ranker.info.get("sha256"), "veto": self.patch_ranker.veto},
            }
        self.ranker = _load_ranker(self.settings.detect)
        if self.ranker is not None:
            # the dots depend on the ranker's weights: they are part of what produced the result
            self.model_info = {
                **self.model_info,
                "dot_ranker": {"sha256": self.ranker.info.get("sha256"), "threshold": self.ranker.threshold},
            }
        self.config_hash = _config_hash(self.settings, self.rules, self.card, self.model_info)

    def assess_file(
        self,
        path: str | Path,
        *,
        px_per_mm: float | None = None,
        roi_polygon: np.ndarray | None = None,
        roi_units: Literal["px", "card_mm"] = "px",
    ) -> Assessment:
        timer = _Timer()
        with timer("load"):
            photo = load_photo(path, self.settings.load)
        return self.assess(photo, px_per_mm=px_per_mm, roi_polygon=roi_polygon, roi_units=roi_units, timer=timer)

    def assess(
        self,
        photo: Photo,
        *,
        px_per_mm: float | None = None,
        roi_polygon: np.ndarray | None = None,
        roi_units: Literal["px", "card_mm"] = "px",
        timer: _Timer | None = None,
    ) -> Assessment:
        """One photo's assessment. NumPy's matrix products run on one thread, so the result does not
        depend on how many cores the process has (the local and Ray engines agree bit for bit)."""
        with blas_threads(1):
            return assess_photo(
                photo, self, px_per_mm=px_per_mm, roi_polygon=roi_polygon, roi_units=roi_units, timer=timer
            )

    def segment(
        self, rgb: np.ndarray, ppm: float, card_mask: np.ndarray | None = None, view: str = "closeup"
    ) -> Segmentation:
        """Classes and dot proposals of an RGB photo of ``view`` at ``ppm`` px/mm, as the assessment forms
        them (a whole-head view as the model asks: models.inference.predict_view). A photo finer than
        ``segment.max_px_per_mm`` (beyond what the network was trained on, and costly), or a close-up
        coarser than ``segment.min_px_per_mm``, is segmented at the canonical scale and the results
        mapped back, so a photo enlarged 2x or 4x gives the mask and proposals of the original."""
        s = self.settings
        resample = ppm > s.segment.max_px_per_mm or (view == "closeup" and ppm < s.segment.min_px_per_mm)
        f = s.detect.canonical_px_per_mm / ppm if resample else 1.0
        if f != 1.0:
            h, w = rgb.shape[:2]
            small = cv2.resize(
                rgb,
                (max(1, round(w * f)), max(1, round(h * f))),
                interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR,
            )
            cm = (
                None
                if card_mask is None
                else cv2.resize(card_mask.view(np.uint8), small.shape[1::-1], interpolation=cv2.INTER_NEAREST).view(
                    bool
                )
            )
            seg = self._segment_native(small, ppm * f, cm, view)
            fx, fy = w / small.shape[1], h / small.shape[0]
            labels = cv2.resize(seg.labels, (w, h), interpolation=cv2.INTER_NEAREST)
            return Segmentation(labels, resize_points(seg.dots_xy.reshape(-1, 2), fx, fy), seg.dot_scores, seg.source)
        return self._segment_native(rgb, ppm, card_mask, view)

    def show_through_reference(
        self, lstar: np.ndarray, labels: np.ndarray, geom: DotGeometry, det_skin: np.ndarray | None, ppm: float
    ) -> np.ndarray:
        """Show-through's bare-skin reference of a close-up: the open skin, away from every dot-like
        structure and from hair (skin between dense strands is shaded by them: pipeline.one_photo.dots.open_skin)."""
        s = self.settings
        scalp = labels == SCALP
        excluded = footprint_mask(
            labels.shape, geom.xy, np.maximum(s.dots.exclude_radius_mm * ppm, 1.6 * geom.radius_px)
        )
        bare = open_skin(scalp, labels == HAIR, excluded, s.dots.skin_hair_margin_mm * ppm)
        if np.count_nonzero(bare[::4, ::4]) >= 200:
            return self._open_skin_reference(lstar, bare, ppm)
        if det_skin is not None:
            # too little open skin (dense hair everywhere): the detector's reference, from the quiet
            # skin beside hair
            return det_skin
        bare = scalp & ~excluded
        return skin_reference(
            lstar,
            bare if bare.any() else scalp,
            ppm,
            s.dots.skin_sigma_mm,
            clip_sd=s.dots.skin_clip_sd,
            iterations=s.dots.skin_iterations,
        )

    def _open_skin_reference(self, lstar: np.ndarray, bare: np.ndarray, ppm: float) -> np.ndarray:
        """Show-through's bare-skin reference (pipeline.one_photo.dots.skin_reference over ``bare``), formed at the
        canonical scale when the photo is finer (the reference is smooth over ``dots.skin_sigma_mm``;
        a 48 MP photo's full-resolution temporaries would cost ~0.6 GB) and brought back to its pixels.
        A reduced pixel counts as open skin only when all of it was."""
        s = self.settings
        f = s.detect.canonical_px_per_mm / ppm
        if f >= 0.75:
            return skin_reference(
                lstar, bare, ppm, s.dots.skin_sigma_mm, clip_sd=s.dots.skin_clip_sd, iterations=s.dots.skin_iterations
            )
        h, w = lstar.shape
        size = (max(1, round(w * f)), max(1, round(h * f)))
        small = cv2.resize(lstar, size, interpolation=cv2.INTER_AREA)
        area = cv2.resize(bare.view(np.uint8) * np.uint8(255), size, interpolation=cv2.INTER_AREA)
        open_small = area == 255
        if np.count_nonzero(open_small) < 200:  # open skin only in slivers narrower than a reduced pixel
            open_small = area >= 128
        ref = skin_reference(
            small,
            open_small,
            ppm * size[0] / w,
            s.dots.skin_sigma_mm,
            clip_sd=s.dots.skin_clip_sd,
            iterations=s.dots.skin_iterations,
        )
        return cv2.resize(ref, (w, h), interpolation=cv2.INTER_LINEAR)

    def second_look_wobble(
        self, rgb: np.ndarray, labels: np.ndarray, ppm: float, card_mask: np.ndarray | None, view: str
    ) -> MaskWobble | None:
        """The segmenter's second look at the photo's centre (pipeline.one_photo.quality.second_look), against
        its first (``labels``, the card already taken out)."""
        rows, cols = second_look_window(labels.shape)
        cm = None if card_mask is None else np.ascontiguousarray(card_mask[rows, cols])
        cm_seen = None if cm is None else np.ascontiguousarray(cm[:, ::-1])  # the card where the mirror puts it

        def segment(im: np.ndarray) -> np.ndarray:
            return self.segment(im, ppm, cm_seen, view).labels

        again = second_look(rgb[rows, cols], segment, self.settings.quality.second_look_stops)
        if cm is not None:
            again = again.copy()
            again[cm] = 0
        return mask_wobble(labels[rows, cols], again)

    def _segment_native(
        self, rgb: np.ndarray, ppm: float, card_mask: np.ndarray | None, view: str = "closeup"
    ) -> Segmentation:
        if self.segmenter is not None:
            return self.segmenter(rgb, view)
        return classical_segmentation(rgb, ppm, card_mask=card_mask)


def _view_of(s: AssessSettings, ppm: float | None, warnings: list[str]) -> str:
    """The photo's view: the setting, else from its scale (a close-up from ``closeup_min_px_per_mm``
    up); without a scale a close-up, said in ``warnings``."""
    if s.view != "auto":
        return s.view
    if ppm is not None:
        return "closeup" if ppm >= s.closeup_min_px_per_mm else "global"
    warnings.append("view unknown without a scale: assumed closeup (pass --set view=global for a whole-head photo)")
    return "closeup"


def _card_mask(cal: Calibration, card: CardSpec, shape: tuple[int, int]) -> np.ndarray | None:
    """HxW bool: the card's paper in the photo (None when no card was found)."""
    if cal.detection is None:
        return None
    paper = paper_rect_mm(card)
    corners = np.array([[paper[0], paper[1]], [paper[2], paper[1]], [paper[2], paper[3]], [paper[0], paper[3]]])
    return card_polygon_mask(shape, apply_homography(cal.detection.card_to_image, corners))


def _roi_to_px(polygon: np.ndarray, units: str, cal: Calibration) -> np.ndarray:
    if polygon.ndim != 2 or polygon.shape[1] != 2 or len(polygon) < 3:
        raise ValueError(f"ROI polygon must be K x 2 with K >= 3 vertices, got shape {polygon.shape}")
    if units == "px":
        return polygon
    if cal.detection is None:
        raise ValueError("ROI given in card millimetres but no card was found in the photo")
    return apply_homography(cal.detection.card_to_image, polygon)


def assess_photo(
    photo: Photo,
    assessor: Assessor,
    *,
    px_per_mm: float | None = None,
    roi_polygon: np.ndarray | None = None,
    roi_units: Literal["px", "card_mm"] = "px",
    timer: _Timer | None = None,
) -> Assessment:
    """One photo's assessment: the only place that knows the order of the stages (module doc).

    ``assessor`` holds what is loaded once (settings, model, card, rules); ``px_per_mm`` a scale for a
    photo without a card; ``roi_polygon`` the region to measure, in photo pixels or card millimetres.
    Call it through :meth:`Assessor.assess` (which fixes NumPy's threads so results do not depend on
    the machine)."""
    s = assessor.settings
    timer = timer or _Timer()
    t_all = time.perf_counter()
    rgb = photo.rgb
    h, w = rgb.shape[:2]
    warnings: list[str] = list(assessor.setup_warnings) + [f"photo: {n}" for n in photo.notes]

    with timer("calibrate"):
        cal = calibrate(rgb, assessor.card, s.calibration, px_per_mm=px_per_mm)
    warnings += list(cal.warnings)
    ppm = cal.px_per_mm
    view = _view_of(s, ppm, warnings)
    work_ppm = ppm if ppm is not None else s.assumed_closeup_px_per_mm
    card_mask = _card_mask(cal, assessor.card, (h, w))

    polygon_px = None
    if roi_polygon is not None:
        polygon_px = _roi_to_px(np.asarray(roi_polygon, float), roi_units, cal)

    with timer("segment"):
        seg = assessor.segment(rgb, work_ppm, card_mask, view)
    labels = seg.labels
    if card_mask is not None:
        labels = labels.copy()
        labels[card_mask] = 0
    wobble = None
    if s.quality.second_look:
        with timer("second_look"):
            wobble = assessor.second_look_wobble(rgb, labels, work_ppm, card_mask, view)

    with timer("colour"):
        # L* of the corrected photo, the one full-frame float image; dot colours are
        # corrected at their sample points only (pipeline.one_photo.pigment)
        lstar = cal.colour.lstar(rgb)

    with timer("dots"):
        geom, evidence, dots_measured, det_skin = empty_geometry(), None, False, None
        if view == "closeup" and ppm is None:
            # dots are found at a canonical px/mm: at a guessed scale a 10 px/mm photo taken
            # for 20 px/mm loses more than half of its dots (measured), so no count is given
            warnings.append(
                "dots not measured: no scale (no card found and no --px-per-mm); dot metrics "
                "are null: pass --px-per-mm for a photo without a card"
            )
        elif view == "closeup":
            try:
                det = detect_dots(
                    lstar,
                    labels,
                    work_ppm,
                    s.detect,
                    s.dots,
                    assessor.rules.visible_min_contrast_dl,
                    assessor.rules.visible_max_hair_cover,
                    model_xy=seg.dots_xy if seg.source == "model" else None,
                    model_score=seg.dot_scores if seg.source == "model" else None,
                    ranker=assessor.ranker,
                    patch_ranker=assessor.patch_ranker,
                )
                geom, evidence, dots_measured, det_skin = det.geometry, det.evidence, True, det.skin_lstar
                if assessor.detection_sink is not None:
                    assessor.detection_sink(det)
            except ScaleOutOfRange as exc:
                warnings.append(f"dots not measured: {exc}; dot metrics are null")
        else:
            warnings.append("dots not measured in a whole-head view: dot metrics are null")
        if view == "global":
            # at 2-6 px/mm a dot is a fraction of a pixel and a strand too: no pixel of the photo is
            # bare skin, so any reference is pigmented or hair-shaded skin, and the head's own shading
            # exceeds the threshold; with the truth's mask and the truth's bare skin it is still tens
            # of pp off (docs/quality.md). No reference: show-through is null, not guessed
            skin_ref: np.float32 | np.ndarray = np.float32(np.nan)
            warnings.append(
                "show_through not measured in a whole-head view: no pixel of it is bare skin "
                "(dots and strands are finer than a pixel); take it from a close-up of the region"
            )
        else:
            skin_ref = assessor.show_through_reference(lstar, labels, geom, det_skin, work_ppm)
        occupied = footprint_mask((h, w), geom.xy, 1.3 * geom.radius_px)
    with timer("pigment"):
        h_img2plane = cal.scale.image_to_plane
        ppm_local = local_px_per_mm(geom.xy, h_img2plane, ppm) if ppm is not None else None
        dots = dot_table(
            rgb, cal.colour, geom, labels, occupied, ppm_local, s.dots.annulus_mm, assessor.rules, work_ppm, evidence
        )

    with timer("quality"):
        quality = check_quality(
            rgb,
            lstar,
            labels,
            ppm,
            view,
            s.quality,
            dot_elongation=geom.elongation,
            dot_orientation=geom.orientation,
            wobble=wobble,
        )
    warnings += [f"quality: {q}" for q in quality.warnings]
    if view == "closeup" and "no_scalp" in quality.warnings and quality.roi_fraction >= s.quality.min_roi_fraction:
        warnings.append(
            f"scalp and hair cover {quality.roi_fraction:.0%} of the photo, too little for a close-up "
            "(quality.min_roi_fraction_closeup): if it is a whole-head photo, pass --set view=global "
            "or its scale"
        )

    with timer("metrics"):
        flags = {k: dots[k].to_numpy(bool) for k in FLAG_NAMES}
        metrics = photo_metrics(
            labels,
            dots[["x", "y"]].to_numpy(),
            dots["diameter_mm"].to_numpy(),
            flags,
            lstar,
            skin_ref,
            cal.plane_scale(),
            assessor.rules.show_through_dl,
            polygon_px,
            show_through_sigma_mm=assessor.rules.viewing_sigma_mm,
            measurable=dots["measurable"].to_numpy(bool),
        )
        if not dots_measured:  # a count that was never made is null, not 0
            metrics = replace(
                metrics,
                dot_count=None,
                dot_density_per_cm2=None,
                dot_diameter_mm_median=None,
                nn_distance_mm_median=None,
                spacing_cv=None,
                clark_evans_r=None,
                blue_shift_fraction=None,
                faded_fraction=None,
                spread_fraction=None,
                dots_not_measurable=None,
            )
    if ppm is None:
        warnings.append("no scale: dot_density_per_cm2, dot sizes and spacing in mm are null")
    timer.times["total"] = time.perf_counter() - t_all + timer.times.get("load", 0.0)
    return Assessment(
        photo=photo,
        view=view,
        calibration=cal,
        quality=quality,
        model=assessor.model_info,
        metrics=metrics,
        dots=dots,
        labels=labels,
        warnings=tuple(dict.fromkeys(warnings)),
        timings_s=dict(timer.times),
        config_hash=assessor.config_hash,
        roi_polygon_px=polygon_px,
    )
