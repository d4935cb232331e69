"""MLflow glue: tracking store, logging a trained model, the registry and its champion.

* Tracking URI: the explicit setting, else ``MLFLOW_TRACKING_URI``, else MLflow's
  own default ``sqlite:///mlflow.db`` in the working directory.
* A trained model is logged as a pyfunc whose artifact is the model file of
  :mod:`models.checkpoint` (state_dict + settings); the pyfunc takes image
  paths and returns class fractions, the dots and the label map.
* Registered as ``smp-segmenter``; the ``champion`` alias moves to a new
  version only when it beats the current champion on the fixed gate suite by the
  gate's margin (:mod:`models.gate`); the decision is a sentence on the training run
  and on the version (tag ``gate_decision``). Each version also keeps its own
  validation score (tag ``val_score``), which is not compared across runs.
* A store without a champion gets the bundled model as its first version, scored on
  the gate suite, and champion (:func:`ensure_champion`): ``models:/smp-segmenter@champion``
  works on a fresh clone.
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
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one small checkpoint: no bar

import mlflow.pyfunc  # noqa: E402
import numpy as np  # noqa: E402
from mlflow.pyfunc import PythonModel  # noqa: E402

from models.checkpoint import resolve_model as _resolve_file  # noqa: E402
from models.gate import GateDecision, GateSettings, decide, score_on_gate  # noqa: E402

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
MODEL_NAME = "smp-segmenter"
CHAMPION = "champion"
SCORE_TAG = "val_score"
GATE_SCORE_TAG = "gate_score"
GATE_SUITE_TAG = "gate_suite"
BUNDLED_EXPERIMENT = "smp-segmenter-registry"


def tracking_uri(explicit: str | None = None) -> str:
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def artifact_root(uri: str) -> str | None:
    """Where new experiments of the store ``uri`` keep their artifacts: for a SQLite file, the folder
    ``mlartifacts`` beside it (MLflow's own default is ``./mlruns`` in whatever folder the process runs
    in, so runs of one store would scatter over the working folders); None for a server or another
    database (the store's own default)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri[len(prefix) :] in ("", ":memory:"):
        return None
    return (Path(uri[len(prefix) :]).resolve().parent / "mlartifacts").as_uri()


def experiment_id(name: str, store: str) -> str:
    """The id of the experiment ``name`` of the current tracking store ``store``, created with its
    artifacts beside a SQLite store (:func:`artifact_root`) when it does not exist yet."""
    import mlflow

    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    root = artifact_root(store)
    return str(mlflow.create_experiment(name, artifact_location=None if root is None else f"{root}/{name}"))


def use_experiment(name: str, uri: str | None = None) -> str:
    """Point MLflow at the tracking store (:func:`tracking_uri` of ``uri``) and make ``name`` the active
    experiment (:func:`experiment_id`); returns its id."""
    import mlflow

    store = tracking_uri(uri)
    mlflow.set_tracking_uri(store)
    experiment_id(name, store)
    return str(mlflow.set_experiment(name).experiment_id)


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
    for pkg in (
        "torch",
        "torchvision",
        "numpy",
        "opencv-python-headless",
        "pandas",
        "scipy",
        "pydantic",
        "pyyaml",
        "mlflow",
    ):
        try:
            reqs.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:  # pragma: no cover - all are dependencies
            continue
    return reqs


with warnings.catch_warnings():
    # MLflow asks for type hints on predict when the class is defined; the pyfunc takes a
    # list of paths or a one-column frame and validates its input itself
    warnings.filterwarnings("ignore", message=".*type hints.*")

    class SmpSegmenterPyfunc(PythonModel):
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
                rows.append(
                    {
                        "path": str(p),
                        "width": rgb.shape[1],
                        "height": rgb.shape[0],
                        "background_fraction": float(frac[0]),
                        "scalp_fraction_px": float(frac[1]),
                        "hair_fraction": float(frac[2]),
                        "dot_count": int(len(pred.dots)),
                        "dots_json": json.dumps(np.round(pred.dots, 3).tolist()),
                        "labels_png_b64": base64.b64encode(png.tobytes()).decode("ascii"),
                    }
                )
            return pd.DataFrame(rows)


@dataclass(frozen=True)
class Registered:
    model_uri: str
    version: str
    score: float
    champion: bool
    previous_champion: str | None
    decision: GateDecision | None = None


def resolve_model(ref: str | Path, uri: str | None = None) -> Path:
    """A model reference -> a local model file (:func:`models.checkpoint.resolve_model`), and for
    ``models:/smp-segmenter...`` in a store that has none yet, the bundled model registered first
    (:func:`ensure_champion`), so the README's ``models:/smp-segmenter@champion`` works on a fresh clone.
    Registry and run references are read from :func:`tracking_uri` (``uri``, else $MLFLOW_TRACKING_URI,
    else ./mlflow.db), whatever store an earlier caller in the process used."""
    text = str(ref)
    if text.startswith(("models:/", "runs:/")):
        mlflow.set_tracking_uri(tracking_uri(uri))
    if text.startswith((f"models:/{MODEL_NAME}@", f"models:/{MODEL_NAME}/")):
        ensure_champion(MODEL_NAME)
    return _resolve_file(ref)


def _log_model(checkpoint: Path):
    import warnings

    with warnings.catch_warnings():
        # the pyfunc takes a list of paths or a one-column frame; no type-hint validation wanted
        warnings.filterwarnings("ignore", message=".*type hints.*")
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__).with_name("pyfunc_entry.py")),
            artifacts={"checkpoint": str(checkpoint)},
            pip_requirements=_pip_requirements(),
        )


def ensure_champion(
    model_name: str = MODEL_NAME, gate: GateSettings = GateSettings(), *, quiet: bool = False
) -> str | None:
    """Register the bundled model (scored on the gate suite) as champion when ``model_name`` has no
    champion in the current tracking store. Returns the version it registered, or None when a champion
    was already there."""
    import sys

    import mlflow
    from mlflow import MlflowClient

    from models.bundled import default_model_path

    if champion_version(model_name) is not None:
        return None
    weights = default_model_path()
    scored = score_on_gate(weights, gate)
    outer = mlflow.active_run()
    bundled = experiment_id(BUNDLED_EXPERIMENT, mlflow.get_tracking_uri())
    with mlflow.start_run(run_name="bundled model", experiment_id=bundled, nested=outer is not None):
        mlflow.log_params({"weights": weights.name, "gate_suite": scored.suite, "gate_photos": gate.n_photos})
        mlflow.log_metrics({f"gate_{k}": v for k, v in scored.summary.items() if v == v})
        mlflow.log_metric("gate_score", scored.score)
        info = _log_model(weights)
        mv = mlflow.register_model(info.model_uri, model_name)
        decision = decide(str(mv.version), scored.score, None, margin=gate.margin, suite=scored.suite)
        client = MlflowClient()
        for k, v in {GATE_SCORE_TAG: f"{scored.score:.6f}", "source": "bundled", **decision.as_tags()}.items():
            client.set_model_version_tag(model_name, mv.version, k, v)
        client.set_registered_model_alias(model_name, CHAMPION, mv.version)
        mlflow.set_tags(
            {
                "registered_version": str(mv.version),
                "champion": "True",
                "champion_decision": "the bundled model, first in this store: " + decision.sentence,
            }
        )
    if not quiet:
        print(
            f"registered the bundled model as {model_name} version {mv.version}, champion "
            f"(gate score {scored.score:.4f} on {scored.suite}) in {mlflow.get_tracking_uri()}",
            file=sys.stderr,
        )
    return str(mv.version)


def champion_gate_score(model_name: str, gate: GateSettings) -> tuple[str, float] | None:
    """(version, gate score) of the current champion on ``gate``'s suite: its stored score when it was
    measured on the same suite, else measured now (and stored)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        mv = client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None
    tags = mv.tags or {}
    suite = gate.suite_id()
    if tags.get(GATE_SUITE_TAG) == suite and tags.get(GATE_SCORE_TAG) is not None:
        return str(mv.version), float(tags[GATE_SCORE_TAG])
    scored = score_on_gate(_resolve_file(f"models:/{model_name}/{mv.version}"), gate)
    client.set_model_version_tag(model_name, mv.version, GATE_SCORE_TAG, f"{scored.score:.6f}")
    client.set_model_version_tag(model_name, mv.version, GATE_SUITE_TAG, suite)
    return str(mv.version), scored.score


def log_and_register(
    checkpoint: Path,
    *,
    score: float,
    register: bool = True,
    model_name: str = MODEL_NAME,
    extra_tags: dict[str, str] | None = None,
    gate: GateSettings = GateSettings(),
) -> Registered:
    """Log the pyfunc model in the active run and register it; it takes ``champion`` only through the
    gate (:mod:`models.gate`). ``score`` is the run's own validation score (tag ``val_score``)."""
    from mlflow import MlflowClient

    info = _log_model(checkpoint)
    if not register:
        return Registered(info.model_uri, "", score, False, None)
    ensure_champion(model_name, gate)  # a store's first champion is the bundled model, never a first run
    previous = champion_gate_score(model_name, gate)
    mv = mlflow.register_model(info.model_uri, model_name)
    scored = score_on_gate(checkpoint, gate)
    decision = decide(str(mv.version), scored.score, previous, margin=gate.margin, suite=scored.suite)
    client = MlflowClient()
    tags = {
        SCORE_TAG: f"{score:.6f}",
        GATE_SCORE_TAG: f"{scored.score:.6f}",
        **decision.as_tags(),
        **{k: str(v) for k, v in (extra_tags or {}).items()},
    }
    for k, v in tags.items():
        client.set_model_version_tag(model_name, mv.version, k, v)
    if decision.promoted:
        client.set_registered_model_alias(model_name, CHAMPION, mv.version)
    mlflow.log_metrics({f"gate_{k}": v for k, v in scored.summary.items() if v == v})
    mlflow.log_metric("gate_score", scored.score)
    mlflow.set_tag("champion_decision", decision.sentence)
    return Registered(
        info.model_uri, str(mv.version), score, decision.promoted, previous[0] if previous else None, decision
    )


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
    import warnings

    import mlflow
    import mlflow.data
    from mlflow.data.pandas_dataset import from_pandas  # what mlflow.data registers as from_pandas

    with warnings.catch_warnings():
        # MLflow registers two local-file source types and warns that it picked one
        warnings.filterwarnings("ignore", message=".*can be interpreted in multiple ways.*")
        ds = from_pandas(manifest_frame, source=source, name=name)
        mlflow.log_input(ds, context=context)
