import os
import tempfile

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
# MLflow runs, registered models and the champion gate's suite go to this process's own temporary folder,
# never into the checkout (tests that need their own store set MLFLOW_TRACKING_URI themselves)
_SCRATCH = tempfile.mkdtemp(prefix="smp-tests-")
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_SCRATCH}/mlflow.db"
os.environ["SMP_GATE_DIR"] = os.path.join(_SCRATCH, "gate")
