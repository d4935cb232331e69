import json
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
# MLflow runs, registered models and the champion gate's suite go to this process's own temporary folder,
# never into the checkout (tests that need their own store set MLFLOW_TRACKING_URI themselves)
_SCRATCH = tempfile.mkdtemp(prefix="smp-tests-")
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_SCRATCH}/mlflow.db"
os.environ["SMP_GATE_DIR"] = os.path.join(_SCRATCH, "gate")


# --------------------------------------------------------------------------- fixtures of several test modules
# Module-scoped as they were in the one module they came from: each module that uses one builds its own.


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """For the report tests (tests/test_report_*.py): a synthetic close-up (saved under a hostile name), its
    classical assessment, and an ``smp compare`` of the photo with itself."""
    from report_helpers import HOSTILE, SCENE

    from data.card import load_card
    from data.config import load_settings
    from data.flags import load_flag_settings
    from data.synth.generate import generate_images
    from data.synth.settings import SynthSettings
    from pipeline.cli import main
    from pipeline.one_photo.assess import Assessor
    from pipeline.one_photo.assessment import write_assessment
    from pipeline.one_photo.settings import load_assess_settings

    root = tmp_path_factory.mktemp("report")
    cfg = load_settings(SynthSettings, None, SCENE, default="synth/closeup.yaml")
    item = next(iter(generate_images(root / "synth", 1, cfg, load_card(), load_flag_settings(), seed=21)))
    src = item.folder / json.loads((item.folder / "truth.json").read_text())["photo"]
    photo = root / "photos" / f"{HOSTILE}{src.suffix}"
    photo.parent.mkdir()
    shutil.copyfile(src, photo)
    assessor = Assessor(load_assess_settings(None, ["segment.method=classical"]))
    folder = write_assessment(assessor.assess_file(photo), root / "assess" / "one")
    assert (
        main(["compare", str(photo), str(photo), "--out", str(root / "cmp"), "--set", "segment.method=classical"]) == 0
    )
    return {"root": root, "photo": photo, "assessment": folder, "comparison": root / "cmp"}
