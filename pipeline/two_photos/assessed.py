"""What the two-photo stages read of an assessed photo."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import pandas as pd

from pipeline.one_photo.calibration import ColourCorrection
from pipeline.one_photo.loading import Photo

__all__ = ["AssessedPhoto"]


class _Scale(Protocol):
    @property
    def source(self) -> str: ...


class _Calibration(Protocol):
    @property
    def px_per_mm(self) -> float | None: ...

    @property
    def scale(self) -> _Scale: ...

    @property
    def colour(self) -> ColourCorrection: ...


class _Metrics(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


class AssessedPhoto(Protocol):
    """What a comparison reads of an assessed photo: the photo, its view, its calibration
    (scale and colour correction), its metrics, its dots and its label mask.

    :class:`pipeline.one_photo.assessment.Assessment` is one; the web app's
    :class:`pipeline.web.comparisons.StoredAssessment` (an assessment read back from its
    output folder, no second segmentation) is the other."""

    @property
    def photo(self) -> Photo: ...

    @property
    def view(self) -> str: ...

    @property
    def calibration(self) -> _Calibration: ...

    @property
    def metrics(self) -> _Metrics: ...

    @property
    def dots(self) -> pd.DataFrame: ...

    @property
    def labels(self) -> np.ndarray: ...


#: Columns of ``links.csv``: one row per linked pair, new dot and lost dot.
