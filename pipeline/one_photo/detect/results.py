"""What the dot stage hands back: the reported dots (:class:`Detection`), why each was reported
(:class:`DotEvidence`) and the candidates that were not (:class:`CandidateTable`, ``REJECT``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.one_photo.dots import DotGeometry


@dataclass(frozen=True)
class DotEvidence:
    """Why each dot was reported (arrays parallel to the geometry)."""

    contrast_dl: np.ndarray  # centre darkness vs local bare skin, L* (canonical scale)
    noise_dl: np.ndarray  # the skin's texture at the dot's scale (filter units ~ L*)
    significance: np.ndarray  # filter response / noise_dl
    continuation: np.ndarray  # darkness beyond the ends along the long axis / centre darkness
    curvature_ratio: np.ndarray  # |smaller| / |larger| Hessian eigenvalue at the dot's scale (1 blob, 0 ridge)
    model_score: np.ndarray  # the learned model's score near the dot (NaN: no model)
    patch_score: np.ndarray  # the second look's probability (models.dot_patch; NaN: not looked at)
    confidence: np.ndarray  # 0-1: the ranker's probability, or the margins over the rules' thresholds
    features: np.ndarray  # (N, F) what the ranker read (models.dot_ranker.FEATURES; F = 0 under the rules)

    def take(self, idx: np.ndarray) -> DotEvidence:
        return DotEvidence(*(getattr(self, k)[idx] for k in self.__dataclass_fields__))


#: Why a candidate was not reported (bits of ``CandidateTable.reason``).
REJECT = {
    "not_scalp": 1,
    "contrast": 2,
    "significance": 4,
    "size": 8,
    "elongation": 16,
    "continuation": 32,
    "duplicate": 64,
    "ridge": 128,
    "ranker": 256,
    "patch": 512,
}


@dataclass(frozen=True)
class CandidateTable:
    """Candidates that were looked at and not reported, with their evidence and the reasons."""

    xy: np.ndarray  # (M, 2) photo px
    diameter_mm: np.ndarray  # (M,) at the nominal scale
    elongation: np.ndarray
    evidence: DotEvidence
    reason: np.ndarray  # (M,) int, OR of REJECT bits

    def reasons(self) -> dict[str, int]:
        """How many candidates failed each test (a candidate can fail several)."""
        return {k: int(np.count_nonzero(self.reason & b)) for k, b in REJECT.items()}


@dataclass(frozen=True)
class Detection:
    geometry: DotGeometry  # in the photo's pixels
    evidence: DotEvidence
    factor: float  # canonical px per photo px
    n_candidates: int
    rejected: CandidateTable
    skin_lstar: np.ndarray  # HxW float32 bare-skin L* reference, resampled to the photo's pixels
    #: (N, S, S) the normalised canonical-scale patches of the reported dots (models.dot_patch), kept
    #: under ``decision=floors`` for training; None otherwise
    patches: np.ndarray | None = None
