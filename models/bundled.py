"""The default model that ships with smp-assess (``models/weights/``).

It is trained from scratch on synthetic scenes by ``scripts/train_default.py``;
``models/weights/MODEL_CARD.md`` says on what, how well, and its limits.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "smp-segmenter.pt"


def default_model_path() -> Path:
    if not DEFAULT_WEIGHTS.is_file():
        raise FileNotFoundError(
            f"{DEFAULT_WEIGHTS}: the bundled model is missing; run scripts/train_default.py or pass --model"
        )
    return DEFAULT_WEIGHTS
