"""Odd ids, missing stored files and unexpected failures: a clear page with the security headers, never a
plain-text traceback."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from web_support import dispose, make_world, synthetic_photos, upload

from pipeline.records.schema import Assessment, Dot

HUGE = str(2**63)  # one past the largest id the records hold


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = make_world(tmp_path_factory.mktemp("home"))
    photo = synthetic_photos(tmp_path_factory.mktemp("synth"), 1, seed=41)[0]
    assert upload(w.api("a-staff"), photo, client_id="E-1").status_code == 201
    assert w.drain() == 1
    yield w
    dispose()


def _id_routes(app) -> list[tuple[str, str]]:
    """(method, path) of every route with an id in its path, the ids filled with HUGE."""
    out = []
    routes = [x for r in app.routes for x in (r.original_router.routes if hasattr(r, "original_router") else [r])]
    for route in routes:
        path = getattr(route, "path", "")
        if not re.search(r"\{[a-z_]*id\}", path):
            continue
        filled = re.sub(r"\{[a-z_]*id\}", HUGE, path)
        filled = re.sub(r"\{[^}]+\}", "x", filled)
        for method in sorted(getattr(route, "methods", None) or {"GET"}):
            if method != "HEAD":
                out.append((method, filled))
    return out


def test_an_id_beyond_64_bits_is_a_404_page_on_every_id_route(world):
    routes = _id_routes(world.app)
    assert len(routes) >= 19, routes
    reviewer, admin = world.login("a-reviewer"), world.login("root")
    for method, path in routes:
        for c in (reviewer, admin):
            r = c.request(method, path, headers={"X-CSRF-Token": c.csrf}, data={"csrf_token": c.csrf})
            assert r.status_code == 404, (method, path, r.status_code, r.text[:200])
            assert "Content-Security-Policy" in r.headers and r.headers["X-Content-Type-Options"] == "nosniff"
            assert "Traceback" not in r.text
    # the largest id itself is an ordinary "not found" from the route
    assert reviewer.get(f"/clients/{2**63 - 1}").status_code == 404


def test_a_missing_stored_photo_is_a_clear_page(world):
    reviewer = world.login("a-reviewer")
    with world.ctx.records.session() as s:
        assessment = s.scalars(sa.select(Assessment)).first()
        dot = s.scalars(sa.select(Dot).where(Dot.assessment_id == assessment.id)).first()
        stored = world.ctx.store.path(assessment.photo.stored_path)
    moved = stored.with_name(stored.name + ".away")
    stored.rename(moved)
    try:
        for path in (f"/review/crops/{dot.id}", f"/review/photo/{assessment.id}/image"):
            r = reviewer.get(path)
            assert r.status_code == 404 and "missing from the photo store" in r.text, (path, r.text[:300])
            assert "Content-Security-Policy" in r.headers
    finally:
        moved.rename(stored)
    assert reviewer.get(f"/review/crops/{dot.id}").status_code == 200


def test_an_unexpected_failure_is_a_500_page_with_the_headers(world, monkeypatch, caplog):
    import pipeline.web.review_pages as review_pages

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(review_pages, "_review_rows", broken)
    from fastapi.testclient import TestClient

    c = TestClient(world.app, raise_server_exceptions=False)
    from web_support import PASSWORD, login_token

    assert (
        c.post(
            "/login",
            data={"username": "a-reviewer", "password": PASSWORD, "csrf_token": login_token(c)},
            follow_redirects=False,
        ).status_code
        == 303
    )
    r = c.get("/review")
    assert r.status_code == 500 and "could not complete" in r.text and "disk on fire" not in r.text
    assert "Content-Security-Policy" in r.headers and "script-src 'none'" in r.headers["Content-Security-Policy"]
    assert "disk on fire" in caplog.text
