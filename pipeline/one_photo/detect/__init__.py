"""Dot detection: candidates at a canonical scale, and a decision with physical meaning.

A reported dot is a pigment deposit measured against its own skin (docs/dots.md,
"What a dot is"). The stage works on the colour-corrected L* of the photo,
resampled to ``canonical_px_per_mm`` (from the card or ``--px-per-mm``), so that
the same scalp photographed with more or fewer pixels gives the same dots; the
results are mapped back to the photo's pixels.

1. **Skin reference** (``pipeline.one_photo.dots.skin_reference``): the local bare-skin L*
   around every point; darkness ``D = reference - L*``.
2. **Candidates**: maxima over space and scale of the scale-normalised
   Laplacian of Gaussian of ``D`` (``-sigma^2 Lap G_sigma * D``, sigmas for dot
   radii ``radius_mm``), plus any centres a learned model proposes. A
   candidate is only a place to look.
3. **Evidence**, measured on each candidate:

   * ``contrast_dL``: centre darkness against the local bare skin (L*), from
     the radial profile (``pipeline.one_photo.dots.radial_profile``);
   * ``noise_dL`` and ``significance``: the skin's own texture at the dot's
     scale is the local robust RMS of the same filter over bare skin (pores,
     mottling, sensor noise and JPEG all count), and ``significance`` is the
     dot's filter response over it: a speck of the skin's texture has ~1-3,
     a pigment deposit many times that;
   * ``diameter`` (half-maximum, mm) and ``elongation``;
   * ``continuation``: darkness beyond the dot's end along its long axis, as
     a share of its centre darkness. A hair shaft or its cut end continues
     along a ridge; a dot, round or elongated 2 : 1, returns to skin.
4. **Decision**: contrast at least the visibility floor of
   ``configs/flags.yaml`` (the truth uses the same), significance at least
   ``min_significance``, size within ``diameter_mm``, elongation at most
   ``max_elongation``, continuation at most ``max_continuation``, centre on
   scalp. A model's score never admits a candidate; it only ranks the admitted
   ones (``confidence``).
5. **A second look** (``patch_look``, ``models.dot_patch``): a small network on the
   1.2 mm of pixels around each admitted candidate refuses look-alikes the
   measured figures cannot tell from a dot (pores, crease junctions, cut ends).
   It only refuses.

Outside ``[min_px_per_mm, max_px_per_mm]`` dots are not detected at all (the
caller reports dot metrics as null with a warning): below, a settled dot
spans less than a pixel; above, the photo is a trichoscope field of a few
millimetres, not an SMP close-up.

The package, one topic a module: :mod:`.settings` (:class:`DetectSettings`, the supported
scales: :func:`resample_factor`, :class:`ScaleOutOfRange`), :mod:`.results` (what the stage
hands back: :class:`Detection`, :class:`DotEvidence`, :class:`CandidateTable`, the reasons
``REJECT``), :mod:`.canonical` (the photo and its classes at the canonical scale; hair given
back to the scalp or filled), :mod:`.scale_space` (the planes of the scale space, their maxima
and the skin's texture at each scale), :mod:`.evidence` (the strand tests and the patches of
the second look: :func:`dot_patches`) and :mod:`.stage` (:func:`detect_dots`, which runs the
steps above in order: candidates, evidence, decision).
"""

from __future__ import annotations

from pipeline.one_photo.detect.evidence import dot_patches
from pipeline.one_photo.detect.results import REJECT, CandidateTable, Detection, DotEvidence
from pipeline.one_photo.detect.settings import DetectSettings, ScaleOutOfRange, resample_factor
from pipeline.one_photo.detect.stage import detect_dots

__all__ = [
    "DetectSettings",
    "DotEvidence",
    "CandidateTable",
    "Detection",
    "REJECT",
    "ScaleOutOfRange",
    "detect_dots",
    "resample_factor",
    "dot_patches",
]
