"""MLflow glue: tracking store, logging a trained model, the registry and its champion.

* Tracking URI: the explicit setting, else ``MLFLOW_TRACKING_URI``, else MLflow's
  own default ``sqlite:///mlflow.db`` in the working directory.
* A trained model is logged as a pyfunc whose artifact is the model file of
  :mod:`models.checkpoint` (state_dict + settings); the pyfunc takes image
  paths and returns class fractions, the dots and the label map.
* Registered as ``smp-segmenter``; the ``champion`` alias moves to a new
  version only when its validation score beats the current champion's (the
  score is stored on each version as the tag ``val_score``).
"""
from __future__ import annotations

import base64
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")

import mlflow.pyfunc  # noqa: E402
import numpy as np  # noqa: E402

from models.checkpoint import resolve_model  # noqa: E402  (models:/ and runs:/ references, or a path)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
MODEL_NAME = "smp-segmenter"
CHAMPION = "champion"
SCORE_TAG = "val_score"


def tracking_uri(explicit: str | None = None) -> str:
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings -> ``a.b.c: value`` strings (MLflow params are flat strings)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, tuple)) else str(v)
    return out


def _pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for pkg in ("torch", "torchvision", "numpy", "opencv-python-headless", "pandas", "scipy", "pydantic",
                "pyyaml", "mlflow"):
        try:
            reqs.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:  # pragma: no cover - all are dependencies
            continue
    return reqs


with warnings.catch_warnings():
    # MLflow asks for type hints on predict when the class is defined; the pyfunc takes a
    # list of paths or a one-column frame and validates its input itself
    warnings.filterwarnings("ignore", message=".*type hints.*")

    class SmpSegmenterPyfunc(mlflow.pyfunc.PythonModel):
        """MLflow pyfunc: image paths in, one row of outputs per image out.

        Input: a DataFrame with a ``path`` column (or a list of paths). Output columns:
        ``path``, ``width``, ``height``, ``background_fraction``, ``scalp_fraction_px``,
        ``hair_fraction``, ``dot_count``, ``dots_json`` (``[[x, y, score], ...]`` in
        pixels) and ``labels_png_b64`` (the class map as a base64 PNG).
        """

        def load_context(self, context) -> None:  # MLflow hook
            from models.checkpoint import load_model

            from models.network import prepare_for_inference

            self._loaded = load_model(context.artifacts["checkpoint"])
            self._fast = prepare_for_inference(self._loaded.model)

        def predict(self, context, model_input, params=None):  # MLflow hook
            import cv2
            import pandas as pd

            from models.inference import predict_image

            paths = list(model_input["path"]) if hasattr(model_input, "columns") else list(model_input)
            params = params or {}
            rows = []
            for p in paths:
                bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
                if bgr is None:
                    raise ValueError(f"{p}: cannot read this image")
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                pred = predict_image(self._fast, rgb, threshold=float(params.get("threshold", 0.3)))
                frac = np.bincount(pred.labels.ravel(), minlength=3)[:3] / pred.labels.size
                _, png = cv2.imencode(".png", pred.labels)
                rows.append({"path": str(p), "width": rgb.shape[1], "height": rgb.shape[0],
                             "background_fraction": float(frac[0]), "scalp_fraction_px": float(frac[1]),
                             "hair_fraction": float(frac[2]), "dot_count": int(len(pred.dots)),
                             "dots_json": json.dumps(np.round(pred.dots, 3).tolist()),
                             "labels_png_b64": base64.b64encode(png.tobytes()).decode("ascii")})
            return pd.DataFrame(rows)


@dataclass(frozen=True)
class Registered:
    model_uri: str
    version: str
    score: float
    champion: bool
    previous_champion: str | None


def log_and_register(checkpoint: Path, *, score: float, register: bool = True,
                     model_name: str = MODEL_NAME, extra_tags: dict[str, str] | None = None) -> Registered:
    """Log the pyfunc model in the active run, register it, move ``champion`` if it is better."""
    import mlflow
    from mlflow import MlflowClient

    import warnings

    with warnings.catch_warnings():
        # the pyfunc takes a list of paths or a one-column frame; no type-hint validation wanted
        warnings.filterwarnings("ignore", message=".*type hints.*")
        info = mlflow.pyfunc.log_model(name="model", python_model=str(Path(__file__).with_name("pyfunc_entry.py")),
                                       artifacts={"checkpoint": str(checkpoint)},
                                       pip_requirements=_pip_requirements())
    if not register:
        return Registered(info.model_uri, "", score, False, None)
    previous = champion_version(model_name)
    mv = mlflow.register_model(info.model_uri, model_name)
    client = MlflowClient()
    client.set_model_version_tag(model_name, mv.version, SCORE_TAG, f"{score:.6f}")
    for k, v in (extra_tags or {}).items():
        client.set_model_version_tag(model_name, mv.version, k, str(v))
    best = previous is None or score > previous[1]
    if best:
        client.set_registered_model_alias(model_name, CHAMPION, mv.version)
    return Registered(info.model_uri, str(mv.version), score, best, previous[0] if previous else None)


def champion_version(model_name: str = MODEL_NAME) -> tuple[str, float] | None:
    """(version, val_score) of the current champion, or None if there is none."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        mv = client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None
    raw = (mv.tags or {}).get(SCORE_TAG)
    return str(mv.version), float(raw) if raw is not None else float("-inf")


def log_manifest_input(manifest_frame, source: str, context: str, name: str) -> None:
    """Record a dataset manifest as an MLflow input of the active run."""
    import mlflow
    import mlflow.data

    import warnings

    with warnings.catch_warnings():
        # MLflow registers two local-file source types and warns that it picked one
        warnings.filterwarnings("ignore", message=".*can be interpreted in multiple ways.*")
        ds = mlflow.data.from_pandas(manifest_frame, source=source, name=name)
        mlflow.log_input(ds, context=context)
