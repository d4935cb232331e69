"""The web app's JSON API and workflows (pipeline/web/): API tokens, idempotent and concurrent photo
submission, background assessment jobs, assessments, tracking, review decisions and their export as a
training dataset, the OpenAPI document, page uploads, and the ``smp serve`` / ``smp users`` commands."""

from __future__ import annotations

import io
import threading
import zipfile
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from web_support import dispose, make_world, noise_png, synthetic_photos, synthetic_series, upload

from pipeline.records.schema import (
    ApiToken,
    Assessment,
    Client,
    Dot,
    Job,
    Photo,
    Region,
    ReviewDecision,
    Visit,
    VisitPhoto,
)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return synthetic_photos(tmp_path_factory.mktemp("synth"), 3, seed=11)


@pytest.fixture
def world(tmp_path):
    w = make_world(tmp_path / "home")
    yield w
    dispose()


# --------------------------------------------------------------------------- tokens


def test_api_tokens_authenticate_and_revoked_tokens_fail(world):
    api = world.api("a-staff")
    assert api.get("/api/v1/clients").status_code == 200
    with world.ctx.records.session() as s:
        tok = s.scalars(sa.select(ApiToken).join(ApiToken.user).where(ApiToken.user.has(username="a-staff"))).one()
        assert tok.last_used_at is not None
        assert world.tokens["a-staff"] not in (tok.token_hash, tok.prefix) and tok.prefix.startswith("smp_")
    from pipeline.web.auth import revoke_token

    with world.ctx.records.transaction() as s:
        assert revoke_token(s, tok.id, world.ctx.now())
    r = api.get("/api/v1/clients")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    b_token = world.tokens["b-staff"]
    tampered = b_token[:-1] + ("B" if b_token[-1] == "A" else "A")  # always differs from the real token
    for header in ("Bearer", "Bearer smp_x", "Basic YTpi", "Bearer " + tampered):
        assert world.client(headers={"Authorization": header}).get("/api/v1/clients").status_code == 401
    # a token made on the admin page works at once and is shown only once
    admin = world.login("root")
    page = admin.post("/admin/users/1/tokens", data={"name": "crm", "csrf_token": admin.csrf})
    token = page.text.split('<code id="token">')[1].split("</code>")[0]
    assert world.client(headers={"Authorization": f"Bearer {token}"}).get("/api/v1/clients").status_code == 200
    assert token not in admin.get("/admin/users").text


# --------------------------------------------------------------------------- submitting photos


def test_submission_is_idempotent_and_assessed_in_the_background(world, photos):
    api = world.api("a-staff")
    first = upload(api, photos[0], name="IMG_1.JPG", view="closeup")
    assert first.status_code == 201, first.text
    doc = first.json()
    assert doc["created"] and doc["job"]["status"] == "queued" and doc["name"] == "IMG_1.jpg"
    assert first.headers["location"] == f"/api/v1/photos/{doc['photo_id']}"
    again = upload(api, photos[0], name="renamed.jpg", view="closeup")
    assert again.status_code == 200
    assert {k: again.json()[k] for k in ("photo_id", "visit_id", "client_id", "sha256")} == {
        k: doc[k] for k in ("photo_id", "visit_id", "client_id", "sha256")
    }
    assert again.json()["job"]["id"] == doc["job"]["id"] and not again.json()["created"]
    # the same photo in another visit is a conflict
    r = upload(api, photos[0], date="2026-05-05")
    assert r.status_code == 409 and f"visit {doc['visit_id']}" in r.json()["detail"]
    # ... but for another clinic the same bytes are simply a new photo of its own (tests/test_web_security_uploads.py)
    r = upload(world.api("b-staff"), photos[0], client_id="B-9")
    assert r.status_code == 201 and r.json()["photo_id"] != doc["photo_id"] and r.json()["created"]

    assert world.drain() == 2
    job = api.get(f"/api/v1/jobs/{doc['job']['id']}").json()
    assert job["status"] == "done" and job["progress"] == 1.0 and job["assessment_id"]
    assessment = api.get(f"/api/v1/assessments/{job['assessment_id']}").json()
    assert assessment["photo_id"] == doc["photo_id"] and assessment["client_id"] == doc["client_id"]
    a = assessment["assessment"]
    assert a["schema"] == "smp-assessment/1" and a["photo"]["sha256"] == doc["sha256"]
    assert a["photo"]["path"] == "IMG_1.jpg", "the server's paths are not shown"
    assert len(assessment["dots"]) == a["metrics"]["dot_count"] > 0
    assert {"x", "y", "contrast_dL", "blue_shift"} <= set(assessment["dots"][0])
    assert api.get(f"/api/v1/assessments/{job['assessment_id']}", params={"dots": "false"}).json()["dots"] is None
    assert (world.home / "assessments" / str(job["assessment_id"]) / "overlay.png").is_file()
    # the photo, visit and client views agree
    photo = api.get(f"/api/v1/photos/{doc['photo_id']}").json()
    assert photo["job"]["status"] == "done" and photo["assessments"][0]["id"] == job["assessment_id"]
    visit = api.get(f"/api/v1/visits/{doc['visit_id']}").json()
    assert visit["kind"] == "session" and visit["session"] == 1 and [p["id"] for p in visit["photos"]] == [photo["id"]]
    client = api.get(f"/api/v1/clients/{doc['client_id']}").json()
    assert client["external_id"] == "C-1" and client["photos"] == 1 and client["regions"][0]["name"] == "crown"
    # re-sending after the assessment changes nothing
    assert upload(api, photos[0], view="closeup").status_code == 200 and world.drain() == 0


def test_a_failing_assessment_is_a_failed_job_with_its_reason(tmp_path):
    class Broken:
        def assess(self, path, progress):
            progress("segment")
            raise ValueError("segmentation exploded")

        def write(self, assessment, folder, name):
            raise AssertionError("not reached")

    w = make_world(tmp_path, assessor_factory=Broken)
    try:
        r = upload(w.api("a-staff"), noise_png(1))
        assert w.drain() == 1
        job = w.api("a-staff").get(f"/api/v1/jobs/{r.json()['job']['id']}").json()
        assert job["status"] == "failed" and job["error"] == "segmentation exploded" and job["attempts"] == 1
        # queued again from the page
        page = w.login("a-staff")
        assert (
            page.post(
                f"/photos/{r.json()['photo_id']}/assess", data={"csrf_token": page.csrf}, follow_redirects=False
            ).status_code
            == 303
        )
        assert w.api("a-staff").get(f"/api/v1/jobs/{job['id']}").json()["status"] == "queued"
    finally:
        dispose()


def test_jobs_left_running_are_queued_again_on_start(world):
    r = upload(world.api("a-staff"), noise_png(2))
    with world.ctx.records.transaction() as s:
        s.execute(sa.update(Job).values(status="running", stage="segment"))
    with world.client():  # the app's start-up
        pass
    assert world.api("a-staff").get(f"/api/v1/jobs/{r.json()['job']['id']}").json()["status"] == "queued"


def test_concurrent_submissions_lose_and_duplicate_nothing(world):
    """8 clients x 4 photos at once, every photo sent twice (by two clients): each photo is
    recorded once, with one job, and both senders get the same ids."""
    images = {i: noise_png(1000 + i) for i in range(16)}
    results: list[tuple[int, int, dict]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def sender(k: int) -> None:
        api = world.api("a-staff")
        try:
            for j in range(4):
                i = (k * 4 + j) % 16 if k < 4 else ((k - 4) * 4 + (3 - j)) % 16
                r = upload(api, images[i], name=f"p{i}.png", client_id=f"LOAD-{i % 4}", kind="baseline", session=None)
                with lock:
                    results.append((i, r.status_code, r.json()))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(results) == 32
    by_photo: dict[int, list[tuple[int, dict]]] = {}
    for i, status, doc in results:
        by_photo.setdefault(i, []).append((status, doc))
    for i, answers in by_photo.items():
        assert sorted(s for s, _ in answers) == [200, 201], (i, answers)
        assert len({(d["photo_id"], d["visit_id"], d["job"]["id"]) for _, d in answers}) == 1
    with world.ctx.records.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Photo)) == 16
        assert s.scalar(sa.select(sa.func.count()).select_from(VisitPhoto)) == 16
        assert s.scalar(sa.select(sa.func.count()).select_from(Job)) == 16
        assert s.scalar(sa.select(sa.func.count()).select_from(Visit)) == 4
    assert len(list((world.home / "photos").rglob("*.png"))) == 16


def test_page_upload_of_several_photos(world, photos):
    page = world.login("a-staff")
    r = page.post("/clients", data={"external_id": "PAGE-1", "csrf_token": page.csrf}, follow_redirects=False)
    client_url = r.headers["location"]
    r = page.post(
        f"{client_url}/upload",
        data={"region": "Left Temple", "date": "2026-02-01", "kind": "baseline", "csrf_token": page.csrf},
        files=[
            ("photos", ("a.jpg", photos[1].read_bytes(), "image/jpeg")),
            ("photos", ("b.png", noise_png(4), "image/png")),
        ],
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == client_url
    html = page.get(client_url).text
    assert "left-temple" in html and html.count('class="status-queued job-status"') == 2
    assert world.drain() == 2
    html = page.get(client_url).text
    assert html.count("/reports/assessment/") == 2
    # one photo: straight to its job's progress page
    r = page.post(
        f"{client_url}/upload",
        data={"region": "crown", "date": "2026-02-01", "kind": "baseline", "csrf_token": page.csrf},
        files=[("photos", ("c.png", noise_png(5), "image/png"))],
        follow_redirects=False,
    )
    job_page = page.get(r.headers["location"])
    assert job_page.status_code == 200 and 'id="job-progress"' in job_page.text
    # no file chosen
    r = page.post(
        f"{client_url}/upload",
        data={"region": "crown", "date": "2026-02-01", "kind": "baseline", "csrf_token": page.csrf},
        files=[("photos", ("", b"", "x"))],
    )
    assert r.status_code == 422


# --------------------------------------------------------------------------- reports and tracking


def test_report_pages(world, photos):
    r = upload(world.api("a-staff"), photos[2])
    world.drain()
    page = world.login("a-staff")
    job = world.api("a-staff").get(f"/api/v1/jobs/{r.json()['job']['id']}").json()
    report = page.get(job["report_url"])
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert "<html" in report.text.lower()
    # named by client, region and visit from the records (never the stored file's hash), linked back
    title = report.text.split("<title>")[1].split("</title>")[0]
    with world.ctx.records.session() as s:
        photo = s.get(Photo, r.json()["photo_id"])
        visit = s.scalars(
            sa.select(Visit).join(VisitPhoto, VisitPhoto.visit_id == Visit.id).where(VisitPhoto.photo_id == photo.id)
        ).one()
        client = s.get(Client, visit.client_id)
        region = s.get(Region, visit.region_id)
        stored = Path(photo.stored_path).name
    assert title.startswith(f"SMP assessment: {client.external_id} / {region.name}, "), title
    assert stored not in title and photo.sha256[:12] not in title
    assert f'href="/clients/{client.id}"' in report.text
    # an assessment without report files (assessed by the CLI, say) says so
    with world.ctx.records.session() as s:
        a_id = s.scalar(sa.select(Assessment.id))
    import shutil

    shutil.rmtree(world.home / "assessments" / str(a_id))
    r = page.get(f"/reports/assessment/{a_id}")
    assert r.status_code == 404 and "Assess the photo again" in r.text


def test_tracking_of_a_client_series(world, tmp_path):
    series = synthetic_series(tmp_path / "series")
    api = world.api("a-staff")
    import re

    keep = [(name, photo) for name, photo in series if "session" in name or "follow-up" in name][:3]
    for k, (name, photo) in enumerate(keep):
        kind = "session" if "session" in name else "follow-up"
        session = re.search(r"session-(\d+)", name).group(1) if kind == "session" else None
        r = upload(api, photo, client_id="SERIES", date=f"2026-0{k + 1}-01", kind=kind, session=session, view="closeup")
        assert r.status_code == 201, r.text
        client_id = r.json()["client_id"]
    assert world.drain() == len(keep)
    doc = api.get(f"/api/v1/clients/{client_id}/tracking").json()
    (region,) = doc["regions"]
    assert region["status"] == "ok", region
    assert len(region["visits"]) == len(keep) and "half_life_days" in region["fading"]
    assert "forecast" in region["fading"] and region["report_url"] == f"/reports/timeline/{region['region_id']}"
    # cached: the second call reuses the folder
    folder = world.home / "tracking" / str(client_id) / str(region["region_id"])
    stamp = (folder / "track.json").stat().st_mtime_ns
    assert api.get(f"/api/v1/clients/{client_id}/tracking").json() == doc
    assert (folder / "track.json").stat().st_mtime_ns == stamp
    page = world.login("a-staff").get(region["report_url"])
    assert page.status_code == 200 and "<html" in page.text.lower()
    # a client with one visit
    r = upload(api, noise_png(8), client_id="ONE")
    one = api.get(f"/api/v1/clients/{r.json()['client_id']}/tracking").json()["regions"][0]
    assert one["status"] == "insufficient" and "at least 2" in one["problem"]


# --------------------------------------------------------------------------- review and export


def _flagged(world, assessment_id, n):
    with world.ctx.records.session() as s:
        return s.scalars(
            sa.select(Dot)
            .where(Dot.assessment_id == assessment_id, sa.or_(Dot.blue_shift, Dot.faded, Dot.spread))
            .order_by(Dot.dot_index)
            .limit(n)
        ).all()


def test_review_decisions_are_stored_and_exported_for_training(world, photos):
    from data.dataset import load_photo as load_training_photo
    from data.manifest import read_manifest

    r = upload(world.api("a-staff"), photos[0], view="closeup")
    upload(world.api("b-staff"), photos[1], client_id="B-1")
    world.drain()
    assessment_id = world.api("a-staff").get(f"/api/v1/jobs/{r.json()['job']['id']}").json()["assessment_id"]
    dots = _flagged(world, assessment_id, 3)
    assert len(dots) == 3
    reviewer = world.login("a-reviewer")
    queue = reviewer.get("/review").text
    assert all(f'data-dot="{d.id}"' in queue for d in dots) and 'src="/review/crops/' in queue
    crop = reviewer.get(f"/review/crops/{dots[0].id}")
    assert crop.status_code == 200 and crop.content[:8] == b"\x89PNG\r\n\x1a\n"
    # accept (JSON, as the keyboard shortcuts send it), reject, relabel (plain form posts)
    r = reviewer.post(
        f"/review/{dots[0].id}",
        data={"decision": "accept", "csrf_token": reviewer.csrf},
        headers={"Accept": "application/json"},
    )
    assert r.status_code == 200 and r.json()["decision"] == "accept"
    r = reviewer.post(
        f"/review/{dots[1].id}",
        data={"decision": "reject", "csrf_token": reviewer.csrf, "next": "/review?flag=any"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/review?flag=any"
    r = reviewer.post(
        f"/review/{dots[2].id}",
        data={"decision": "relabel", "new_label": "none", "csrf_token": reviewer.csrf, "next": "https://evil.example"},
        follow_redirects=False,
    )
    assert r.headers["location"] == "/review"
    bad = reviewer.post(
        f"/review/{dots[2].id}",
        data={"decision": "relabel", "new_label": "purple", "csrf_token": reviewer.csrf},
        headers={"Accept": "application/json"},
    )
    assert bad.status_code == 422
    with world.ctx.records.session() as s:
        stored = s.scalars(sa.select(ReviewDecision).order_by(ReviewDecision.id)).all()
        assert [(d.dot_id, d.decision, d.new_label, d.reviewer) for d in stored] == [
            (dots[0].id, "accept", None, "a-reviewer"),
            (dots[1].id, "reject", None, "a-reviewer"),
            (dots[2].id, "relabel", "none", "a-reviewer"),
        ]
        reviewer_id = s.scalar(sa.text("SELECT id FROM users WHERE username = 'a-reviewer'"))
        assert {d.reviewer_user_id for d in stored} == {reviewer_id}
        n_dots = s.scalar(sa.select(sa.func.count()).select_from(Dot).where(Dot.assessment_id == assessment_id))
    # the reviewed dots leave the default (unreviewed) queue
    queue = reviewer.get("/review").text
    assert all(f'data-dot="{d.id}"' not in queue for d in dots)
    assert f'data-dot="{dots[0].id}"' in reviewer.get("/review?status=reviewed").text
    # the filter form as a browser sends it (empty fields mean "any"), and filters that exclude everything
    assert f'data-dot="{dots[0].id}"' in reviewer.get("/review?flag=any&status=all&date_from=&date_to=").text
    assert 'id="queue-empty"' in reviewer.get("/review?status=all&date_from=2030-01-01").text
    assert reviewer.get("/review?date_from=yesterday").status_code == 422

    r = reviewer.post("/review/export", data={"csrf_token": reviewer.csrf})
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(r.content))
    (root,) = {n.split("/")[0] for n in archive.namelist()}
    out = Path(world.home / "unzipped")
    archive.extractall(out)
    manifest = read_manifest(out / root / "manifest.csv")  # smp train's reader: files exist, columns valid
    assert len(manifest) == 1, "only the reviewed photo of this clinic"
    row = manifest[0]
    # the photo's dots are not marked done: no dot supervision from it (tests/test_web_review.py marks them done)
    assert row.source == "review" and row.view == "closeup" and row.dots is None
    table = pd.read_csv(row.image.parent / "dots.csv")
    assert len(table) == n_dots - 1, "the rejected dot is gone"
    assert dots[1].dot_index not in set(table["dot_id"])
    assert pd.read_csv(row.image.parent / "rejected.csv")["dot_id"].tolist() == [dots[1].dot_index]
    accepted = table.set_index("dot_id").loc[dots[0].dot_index]
    relabelled = table.set_index("dot_id").loc[dots[2].dot_index]
    assert (
        accepted["review"] == "confirmed"
        and accepted["visible"]
        and any(bool(accepted[f]) == bool(getattr(dots[0], f)) for f in ("blue_shift", "faded", "spread"))
    )
    assert relabelled["review"] == "relabelled" and relabelled["visible"]
    assert not relabelled[["blue_shift", "faded", "spread"]].any()
    assert Counter(table["review"])["unreviewed"] == n_dots - 3
    assert not table.loc[table["review"] == "unreviewed", "visible"].any(), "the model's guesses are no truth"
    photo = load_training_photo(row)  # the training loader reads it
    assert photo.points.shape == (0, 2) and not photo.has_points and (photo.mask == 255).all()
    # the other clinic's reviewer exports only theirs (none reviewed there)
    other = world.login("b-reviewer")
    empty = zipfile.ZipFile(io.BytesIO(other.post("/review/export", data={"csrf_token": other.csrf}).content))
    manifest_name = next(n for n in empty.namelist() if n.endswith("manifest.csv"))
    assert empty.read(manifest_name).decode().strip().count("\n") == 0


# --------------------------------------------------------------------------- OpenAPI and the CLI


def test_openapi_document_and_docs(world):
    api = world.api("a-staff")
    spec = api.get("/api/openapi.json").json()
    assert {
        "/api/v1/photos",
        "/api/v1/jobs/{job_id}",
        "/api/v1/assessments/{assessment_id}",
        "/api/v1/clients",
        "/api/v1/clients/{client_id}/tracking",
    } <= set(spec["paths"])
    assert not any(p.startswith(("/review", "/admin", "/login")) for p in spec["paths"])
    body = spec["paths"]["/api/v1/photos"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body
    docs = world.login("a-staff").get("/api/docs")
    assert docs.status_code == 200 and "/api/v1/photos" in docs.text and "multipart/form-data" in docs.text


def test_cli_users_and_serve_settings(tmp_path, monkeypatch, capsys):
    from pipeline.cli import main

    monkeypatch.setenv("SMP_HOME", str(tmp_path))
    monkeypatch.delenv("SMP_DATABASE_URL", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO("a fine long password\n"))
    assert main(["users", "add", "Nina", "--clinic", "north", "--role", "reviewer", "--password-stdin"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["users", "add", "otto", "--clinic", "north", "--role", "staff", "--password-stdin"]) == 2
    assert "at least 10" in capsys.readouterr().err
    assert main(["users", "token", "nina", "--name", "crm"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert token.startswith("smp_")
    assert main(["users", "list"]) == 0
    assert "nina" in capsys.readouterr().out
    assert main(["users", "token", "nobody", "--name", "x"]) == 2
    monkeypatch.setattr("sys.stdin", io.StringIO("another long password\n"))
    assert main(["users", "passwd", "nina", "--password-stdin"]) == 0
    # the app on that home accepts the token; revoked, it does not
    from fastapi.testclient import TestClient

    from pipeline.web import WebSettings, create_app

    app = create_app(WebSettings(home=tmp_path, start_worker=False))
    c = TestClient(app, headers={"Authorization": f"Bearer {token}"})
    assert c.get("/api/v1/clients").status_code == 200
    from pipeline.web.auth import authenticate_password

    with app.state.ctx.records.session() as s:
        assert authenticate_password(s, "nina", "another long password") is not None
    assert main(["users", "revoke", "1"]) == 0
    assert c.get("/api/v1/clients").status_code == 401
    assert (tmp_path / "web-secret.key").stat().st_mode & 0o077 == 0, "the secret key is private"
    dispose()


def test_the_model_assesses_in_the_forked_job_process(tmp_path, photos):
    """With the network (not the classical segmenter) a forked assessment must not wait forever on the
    OpenMP threads of its parent: here the test process itself has run torch on two threads first (as a
    server, or the tests before this one, may have), and the job still finishes (pipeline.web.isolation:
    the child runs torch on one thread). Before the fix such jobs hung until their time limit."""
    import torch

    from pipeline.web.jobs import PipelineAssessor

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    a = torch.randn(600, 600)
    assert float((a @ a).sum().abs()) >= 0 and float(a.to(torch.bfloat16).float().sum().abs()) >= 0
    w = make_world(tmp_path, assessor_factory=lambda: PipelineAssessor(None, ()), job_time_limit_s=120)
    try:
        r = upload(w.api("a-staff"), photos[0], client_id="NET-1")
        assert r.status_code == 201, r.text
        assert w.drain() == 1
        with w.ctx.records.session() as s:
            job = s.scalars(sa.select(Job)).one()
            assert job.status == "done", job.error
    finally:
        dispose()
        torch.set_num_threads(before)
