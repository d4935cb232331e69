"""The web app's before/after comparison page (pipeline/web/comparisons.py, /reports/compare/...)."""

import json

import cv2
import numpy as np
import pytest
import sqlalchemy as sa
from test_compare import SERIES
from web_support import dispose, make_world, noise_png, upload

from data.card import load_card
from data.config import load_settings
from data.flags import load_flag_settings
from data.synth.generate import item_rng
from data.synth.series import render_series
from data.synth.settings import SynthSettings
from pipeline.records.schema import Assessment, Client
from pipeline.web.comparisons import StoredAssessment, comparison_folder
from pipeline.web.jobs import assessment_folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Sessions 1 and 2 of one synthetic client (C-1, crown) uploaded by clinic A and assessed; a third
    photo of C-1 not assessed yet; a photo of another client (C-2)."""
    cfg = load_settings(SynthSettings, None, SERIES, default="synth/closeup.yaml")
    scenes, _ = render_series(item_rng(47, 0), cfg, load_card(), load_flag_settings())
    pngs = [cv2.imencode(".png", np.ascontiguousarray(scene.photo[..., ::-1]))[1].tobytes() for _, scene in scenes[1:3]]
    w = make_world(tmp_path_factory.mktemp("home"))
    api = w.api("a-staff")
    ids = {}
    for name, data, date, session in (("before", pngs[0], "2026-01-10", "1"), ("after", pngs[1], "2026-02-10", "2")):
        r = upload(api, data, name=f"{name}.png", date=date, session=session)
        assert r.status_code == 201, r.text
        ids[name] = r.json()["photo_id"]
    assert w.drain() == 2
    for key, client, seed in (("pending", "C-1", 5), ("other_client", "C-2", 6)):
        r = upload(api, noise_png(seed, (320, 256)), name=f"{key}.png", client_id=client, date="2026-03-01")
        assert r.status_code == 201, r.text
        ids[key] = r.json()["photo_id"]
    with w.ctx.records.session() as s:
        ids["assessments"] = [
            s.scalar(sa.select(Assessment.id).where(Assessment.photo_id == ids[k])) for k in ("before", "after")
        ]
    w.ids = ids
    yield w
    dispose()


def test_comparison_page_is_built_once_and_cached(world, monkeypatch):
    import pipeline.two_photos.compare

    # count the builds: a second build of a cached comparison is thrown away (the folder is already
    # there), so neither the folder nor its files' times could tell it from a cache hit
    builds = []
    build = pipeline.two_photos.compare.compare_photos
    monkeypatch.setattr(
        pipeline.two_photos.compare, "compare_photos", lambda *a, **k: builds.append(1) or build(*a, **k)
    )
    ids = world.ids
    page = world.login("a-staff")
    url = f"/reports/compare/{ids['before']}/{ids['after']}"
    r = page.get(url)
    assert r.status_code == 200, r.text[:500]
    assert len(builds) == 1
    assert "show-through" in r.text.lower() and "data:image" in r.text
    # named by the client, the region and both visits from the records, with a way back into the app
    title = r.text.split("<title>")[1].split("</title>")[0]
    assert title == "SMP before / after: C-1 / crown, 10 Jan 2026, session 1 \u2192 10 Feb 2026, session 2", title
    with world.ctx.records.session() as s:
        client_id = s.scalar(sa.select(Client.id).where(Client.external_id == "C-1"))
    assert f'<a href="/clients/{client_id}">&larr; Back to C-1 in smp-assess</a>' in r.text
    folder = comparison_folder(world.home, *ids["assessments"])
    assert folder.parent == world.home / "comparisons"
    doc = json.loads((folder / "comparison.json").read_text())
    assert doc["links"] is not None and doc["headline"]["dots_added"] > 0  # session 2 added dots
    for side in ("before", "after"):
        assert {"assessment.json", "dots.csv", "mask.png", "overlay.png"} <= {p.name for p in (folder / side).iterdir()}
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary folder left
    # served from the cache the second time: nothing registered, linked or written again
    stamp = (folder / "comparison.json").stat().st_mtime_ns
    again = page.get(url)
    assert again.status_code == 200 and title in again.text
    assert len(builds) == 1, "the cached comparison was built again"
    assert (folder / "comparison.json").stat().st_mtime_ns == stamp


def test_client_page_form_leads_to_the_comparison(world):
    ids = world.ids
    page = world.login("a-staff")
    with world.ctx.records.session() as s:
        client_id = s.scalar(sa.text("select client_id from visits limit 1"))
    html = page.get(f"/clients/{client_id}").text
    assert 'action="/reports/compare"' in html
    assert f'<option value="{ids["before"]}"' in html and f'<option value="{ids["after"]}"' in html
    assert f'<option value="{ids["pending"]}"' not in html  # not assessed: not offered
    r = page.get("/reports/compare", params={"before": ids["before"], "after": ids["after"]}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/reports/compare/{ids['before']}/{ids['after']}"
    assert page.get("/reports/compare", params={"before": "x"}).status_code == 422


def test_other_clinic_and_anonymous_get_nothing(world):
    ids = world.ids
    url = f"/reports/compare/{ids['before']}/{ids['after']}"
    r = world.login("b-staff").get(url)
    assert r.status_code == 404 and "C-1" not in r.text and "data:image" not in r.text
    r = world.client().get(url, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")


def test_unassessed_photo_and_other_client_are_told(world):
    ids = world.ids
    page = world.login("a-staff")
    r = page.get(f"/reports/compare/{ids['before']}/{ids['pending']}")
    assert r.status_code == 409 and "wait" in r.text.lower()
    r = page.get(f"/reports/compare/{ids['before']}/{ids['other_client']}")
    assert r.status_code == 422 and "different clients" in r.text
    assert page.get(f"/reports/compare/{ids['before']}/{ids['before']}").status_code == 422


def test_registration_failure_still_compares_what_needs_no_alignment(world, monkeypatch):
    import pipeline.two_photos.link as link
    from pipeline.two_photos.settings import RegistrationError

    def fail(*args, **kwargs):
        raise RegistrationError("the photos barely overlap (3% of the before photo)")

    monkeypatch.setattr(link, "register_photos", fail)
    ids = world.ids
    r = world.login("a-staff").get(f"/reports/compare/{ids['after']}/{ids['before']}")
    assert r.status_code == 200
    text = " ".join(r.text.split())
    assert "could not be lined up (the photos barely overlap" in text and "retake the after photo" in text
    assert "Dot density" in text and "Dots where both photos overlap" not in text
    folder = comparison_folder(world.home, *reversed(ids["assessments"]))
    doc = json.loads((folder / "comparison.json").read_text())
    assert doc["registered"] is False and (folder / "before" / "assessment.json").is_file()


def test_stored_assessment_reads_back_what_the_worker_wrote(world):
    from pipeline.one_photo.loading import load_photo

    aid = world.ids["assessments"][0]
    folder = assessment_folder(world.home, aid)
    with world.ctx.records.session() as s:
        rel = s.scalar(sa.text("select stored_path from photos where id = :i"), {"i": world.ids["before"]})
    a = StoredAssessment.from_folder(folder, load_photo(world.ctx.store.path(rel)))
    doc = json.loads((folder / "assessment.json").read_text())
    assert a.view == "closeup" and a.metrics.to_dict() == doc["metrics"]
    assert a.calibration.px_per_mm == pytest.approx(doc["calibration"]["px_per_mm"])
    assert a.calibration.colour.source == doc["calibration"]["colour_source"] == "card"
    assert a.labels.shape == a.photo.rgb.shape[:2] and len(a.dots) == doc["metrics"]["dot_count"]


def test_reports_name_each_photo_as_it_was_uploaded_never_by_its_stored_file(world):
    """The store names a photo by its content hash; a clinic knows it by the name it uploaded."""
    from pipeline.records.schema import Photo

    ids = world.ids
    with world.ctx.records.session() as s:
        stored = {k: s.scalar(sa.select(Photo.stored_path).where(Photo.id == ids[k])) for k in ("before", "after")}
    hashes = [str(p).rsplit("/", 1)[-1].split(".")[0] for p in stored.values()]
    page = world.login("a-staff")
    compared = " ".join(page.get(f"/reports/compare/{ids['before']}/{ids['after']}").text.split())
    assert "session 1 (before.png)" in compared and "session 2 (after.png)" in compared
    assessed = page.get(f"/reports/assessment/{ids['assessments'][1]}")
    assert assessed.status_code == 200 and "after.png" in assessed.text
    for text in (compared, assessed.text):
        # only the fingerprint row may show the hash; no file name made of it
        assert not any(f"{h}.png" in text for h in hashes)
