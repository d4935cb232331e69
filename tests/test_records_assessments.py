"""Records: storing assessments and their dots, dot links between visits, and review decisions."""

from __future__ import annotations

import math

import pytest
import sqlalchemy as sa
from records_helpers import counts, fake_assessor, fake_doc, fake_dots, make_photos, visit_args

from pipeline.records import PhotoStore, add_visit, open_records, record_review, store_assessment, store_dot_links
from pipeline.records import db as records_db
from pipeline.records.schema import Assessment, Dot, DotLink, Photo

pytestmark = pytest.mark.filterwarnings("error::sqlalchemy.exc.SAWarning")


@pytest.fixture(autouse=True)
def _dispose_engines():
    yield
    records_db.close_all()


@pytest.fixture
def env(tmp_path):
    """An open records database (temporary SQLite file), a store, and a client ``C1``."""
    records = open_records(f"sqlite:///{tmp_path / 'records.db'}")
    store = PhotoStore(tmp_path / "store")
    return records, store, tmp_path


# --------------------------------------------------------------------------- assessments


def test_store_assessment_is_idempotent_and_appends_new_configs(env):
    records, store, tmp = env
    photos = make_photos(tmp / "in", 1)
    result = add_visit(records, store, photos=photos, assess=fake_assessor(), **visit_args())
    assert result.assessments_added == 1
    with records.session() as s:
        sha = s.scalars(sa.select(Photo.sha256)).one()
    with records.transaction() as s:
        again = store_assessment(s, sha, fake_doc(sha), fake_dots())
        assert not again.created
        other = store_assessment(s, sha, fake_doc(sha, config="cfg2"), fake_dots(5))
        classical = store_assessment(s, sha, fake_doc(sha, model_sha=None), None)
        assert other.created and classical.created and len({again.id, other.id, classical.id}) == 3
    assert counts(records)["assessments"] == 3 and counts(records)["dots"] == 3 + 5
    # re-ingesting the visit with --assess assesses nothing again
    assert add_visit(records, store, photos=photos, assess=fake_assessor(), **visit_args()).assessments_added == 0
    with records.session() as s:
        a = s.get(Assessment, again.id)
        assert a.metrics["dot_density_per_cm2"] is None and a.metrics["show_through"] == 0.25  # NaN -> null
        assert (a.model_key, a.dot_count, a.view) == ("ab" * 32, 3, "closeup")
        assert s.get(Assessment, classical.id).model_key == "smp-segmenter@3"
        assert s.scalars(sa.select(Photo.view)).one() == "closeup"  # filled in from the assessment
        dots = s.scalars(sa.select(Dot).where(Dot.assessment_id == a.id).order_by(Dot.dot_index)).all()
        ref = fake_dots()
        assert [d.dot_index for d in dots] == [0, 1, 2] and dots[0].diameter_mm is None
        assert math.isclose(dots[1].lab_l, ref.loc[1, "L"]) and dots[2].blue_shift == bool(ref.loc[2, "blue_shift"])
        assert dots[1].skin_samples == 11
    with records.transaction() as s, pytest.raises(ValueError, match="is of photo"):
        store_assessment(s, sha, fake_doc("f" * 64), None)
    with records.transaction() as s, pytest.raises(LookupError, match="not in the records"):
        store_assessment(s, "f" * 64, fake_doc("f" * 64), None)


def test_dot_links_and_review_decisions(env):
    records, store, tmp = env
    photos = make_photos(tmp / "in", 2)
    add_visit(records, store, photos=photos[:1], assess=fake_assessor(), **visit_args(kind="session 1"))
    add_visit(records, store, photos=photos[1:], assess=fake_assessor(), **visit_args(kind="session 2"))
    with records.transaction() as s:
        before, after = s.scalars(sa.select(Assessment.id).order_by(Assessment.id)).all()
        pairs = [(0, 1, 0.05), (1, 2, float("nan")), (2, 0, None)]
        assert store_dot_links(s, before, after, pairs, "register/v1") == 3
        assert store_dot_links(s, before, after, pairs, "register/v1") == 0
        with pytest.raises(ValueError, match="no dot 7"):
            store_dot_links(s, before, after, [(7, 0, None)], "register/v1")
        dot = s.scalars(sa.select(Dot.id).where(Dot.assessment_id == after)).first()
        record_review(s, dot, "reject", "dr. k", note="hair, not a dot")
        record_review(s, dot, "relabel", "dr. k", new_label="spread")
        with pytest.raises(ValueError, match="needs new_label"):
            record_review(s, dot, "relabel", "dr. k")
    with records.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(DotLink)) == 3
        assert s.scalars(sa.select(DotLink.residual_mm).order_by(DotLink.id)).all() == [0.05, None, None]
