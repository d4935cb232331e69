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


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """For the web security tests (tests/test_web_security_*.py): two synthetic photos."""
    from web_support import synthetic_photos

    return synthetic_photos(tmp_path_factory.mktemp("synth"), 2)


@pytest.fixture(scope="module")
def world(tmp_path_factory, photos):
    """For the web security tests (tests/test_web_security_*.py): two clinics, each with a client whose photo
    has been assessed (flagged dots included)."""
    import sqlalchemy as sa
    from web_support import dispose, make_world, upload

    from pipeline.records.schema import Assessment, Dot, Visit

    w = make_world(tmp_path_factory.mktemp("home"))
    ids = {}
    for user, photo, clinic in (("a-staff", photos[0], "a"), ("b-staff", photos[1], "b")):
        r = upload(w.api(user), photo, client_id=f"{clinic.upper()}-1")
        assert r.status_code == 201, r.text
        ids[clinic] = r.json()
    assert w.drain() == 2
    with w.ctx.records.session() as s:
        for clinic, sub in ids.items():
            a = s.scalars(sa.select(Assessment).where(Assessment.photo_id == sub["photo_id"])).one()
            dot = s.scalars(
                sa.select(Dot).where(Dot.assessment_id == a.id, sa.or_(Dot.blue_shift, Dot.faded, Dot.spread))
            ).first()
            assert dot is not None, "the synthetic photo should have flagged dots"
            region = s.scalar(sa.select(Visit.region_id).where(Visit.id == sub["visit_id"]))
            ids[clinic] = {
                "client": sub["client_id"],
                "visit": sub["visit_id"],
                "photo": sub["photo_id"],
                "job": sub["job"]["id"],
                "assessment": a.id,
                "dot": dot.id,
                "region": region,
            }
    w.ids = ids
    yield w
    dispose()
