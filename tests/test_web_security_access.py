"""Web security: authentication on every route, clinics as tenants, roles, CSRF, login redirects, passwords, headers."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from fastapi.routing import iter_route_contexts
from web_security_helpers import counts
from web_support import PASSWORD, login_token, noise_png, upload

from pipeline.records.schema import User

PUBLIC = {("GET", "/login"), ("POST", "/login"), ("GET", "/healthz"), ("GET", "/favicon.ico")}


def _routes(app):
    """(method, path) of every route of the app, included routers flattened."""
    for route in iter_route_contexts(app.routes):
        for method in sorted(route.methods or ()):
            if method != "HEAD":
                yield method, route.path


def _fill(path: str, value: int = 1) -> str:
    return re.sub(r"\{[^}]+\}", str(value), path)


# --------------------------------------------------------------------------- authentication everywhere


def test_every_route_requires_authentication(world):
    routes = list(_routes(world.app))
    assert PUBLIC <= set(routes)
    assert len(routes) > 25
    anonymous = world.client()
    bad_token = world.client(headers={"Authorization": "Bearer smp_not-a-real-token"})
    for method, path in routes:
        if (method, path) in PUBLIC:
            continue
        url = _fill(path)
        for c in (anonymous, bad_token):
            r = c.request(method, url, follow_redirects=False)
            if method == "GET" and not path.startswith("/api/") and "Authorization" not in c.headers:
                assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), (method, path)
            else:
                assert r.status_code == 401, (method, path, r.status_code)
            assert "C-1" not in r.text and "A-1" not in r.text


def test_healthz_and_login_are_the_only_public_routes(world):
    c = world.client()
    assert c.get("/healthz").json() == {"status": "ok"}
    assert c.get("/favicon.ico").status_code == 204 and c.get("/favicon.ico").content == b""
    assert c.get("/login").status_code == 200
    assert c.get("/api/openapi.json").status_code == 401
    assert c.get("/api/docs", follow_redirects=False).status_code == 401


# --------------------------------------------------------------------------- tenancy


def _tenant_requests(ids):
    """(method, url, data) of every route taking an id, for the ids of one clinic."""
    return [
        ("GET", f"/clients/{ids['client']}", None),
        ("GET", f"/clients/{ids['client']}/upload", None),
        ("GET", f"/jobs/{ids['job']}", None),
        ("GET", f"/reports/assessment/{ids['assessment']}", None),
        ("GET", f"/reports/timeline/{ids['region']}", None),
        ("GET", f"/review/crops/{ids['dot']}", None),
        ("POST", f"/review/{ids['dot']}", {"decision": "accept"}),
        ("POST", f"/photos/{ids['photo']}/assess", {}),
        ("POST", f"/clients/{ids['client']}/upload", {"region": "crown", "date": "2026-01-01", "kind": "baseline"}),
        ("GET", f"/api/v1/clients/{ids['client']}", None),
        ("GET", f"/api/v1/clients/{ids['client']}/tracking", None),
        ("GET", f"/api/v1/visits/{ids['visit']}", None),
        ("GET", f"/api/v1/photos/{ids['photo']}", None),
        ("GET", f"/api/v1/jobs/{ids['job']}", None),
        ("GET", f"/api/v1/assessments/{ids['assessment']}", None),
        ("GET", f"/review/photo/{ids['assessment']}", None),
        ("GET", f"/review/photo/{ids['assessment']}/image", None),
        ("GET", f"/api/v1/review/photos/{ids['assessment']}", None),
        ("POST", f"/api/v1/review/photos/{ids['assessment']}/done", {}),
        ("POST", f"/api/v1/review/photos/{ids['assessment']}/dots", {"x": "1", "y": "1"}),
    ]


def _reviewers_only(url: str) -> bool:
    return url.startswith(("/review", "/api/v1/review/"))


def _as(world, username):
    """A logged-in client of a user who may use every route of the list (admin role aside)."""
    return world.login(username)


@pytest.mark.parametrize("other", ["staff", "reviewer"])
def test_another_clinics_ids_are_404(world, other):
    b = _as(world, f"b-{other}")
    before = counts(world)
    missing = {k: 999_999 for k in world.ids["a"]}
    pairs = zip(_tenant_requests(world.ids["a"]), _tenant_requests(missing), strict=True)
    for (method, url, data), (_, url_missing, _) in pairs:
        if other == "reviewer" and (url.endswith("/upload") or "/assess" in url):
            continue  # reviewers cannot upload at all (403 by role, tested below)
        if other == "staff" and _reviewers_only(url):
            continue  # staff have no review queue (403 by role)
        kw = {"data": {**data, "csrf_token": b.csrf}} if data is not None else {}
        if url.endswith("/upload") and method == "POST":
            kw["files"] = {"photos": ("x.png", noise_png(7), "image/png")}
        r = b.request(method, url, follow_redirects=False, **kw)
        r_missing = b.request(method, url_missing, follow_redirects=False, **kw)
        assert r.status_code == 404, (method, url, r.status_code, r.text[:200])
        assert r_missing.status_code == 404
        # the same answer as for an id that does not exist: nothing to tell them apart
        strip = re.compile(r"nonce-[^'\"]+|value=\"[^\"]+\"|nonce=\"[^\"]+\"")
        assert strip.sub("", r.text) == strip.sub("", r_missing.text), url
        assert "A-1" not in r.text
    # the same with an API token
    api = world.api(f"b-{other}")
    for method, url, _ in _tenant_requests(world.ids["a"]):
        if url.startswith("/api/") and not (other == "staff" and _reviewers_only(url)):
            assert api.request(method, url).status_code == 404, url
    assert counts(world) == before


def test_own_clinic_and_admin_see_the_same_ids(world):
    a = world.login("a-staff")
    for method, url, _ in _tenant_requests(world.ids["a"]):
        if method == "GET" and not _reviewers_only(url) and "timeline" not in url:
            assert a.get(url).status_code == 200, url
    reviewer = world.login("a-reviewer")
    for method, url, _ in _tenant_requests(world.ids["a"]):
        if method == "GET" and _reviewers_only(url):
            assert reviewer.get(url).status_code == 200, url
    admin = world.api("root")
    for clinic in ("a", "b"):
        assert admin.get(f"/api/v1/assessments/{world.ids[clinic]['assessment']}").status_code == 200


def test_listings_show_only_the_users_clinic(world):
    a = world.api("a-staff")
    assert [c["external_id"] for c in a.get("/api/v1/clients").json()] == ["A-1"]
    page = world.login("b-staff").get("/").text
    assert "B-1" in page and "A-1" not in page
    queue = world.login("b-reviewer").get("/review?status=all").text
    assert f'data-dot="{world.ids["b"]["dot"]}"' in queue and f'data-dot="{world.ids["a"]["dot"]}"' not in queue
    # a non-admin asking for another clinic's listing still gets their own
    assert [c["external_id"] for c in a.get("/api/v1/clients", params={"clinic_id": 999}).json()] == ["A-1"]
    admin = world.api("root").get("/api/v1/clients").json()
    assert sorted(c["external_id"] for c in admin) == ["A-1", "B-1"]


def test_roles(world):
    staff, reviewer = world.login("a-staff"), world.login("a-reviewer")
    assert staff.get("/review").status_code == 403
    assert staff.get("/admin/users").status_code == 403
    assert reviewer.get(f"/clients/{world.ids['a']['client']}/upload").status_code == 403
    assert upload(world.api("a-reviewer"), noise_png(1)).status_code == 403
    assert reviewer.get("/admin/users").status_code == 403
    assert reviewer.get("/review").status_code == 200
    assert world.login("root").get("/admin/users").status_code == 200


# --------------------------------------------------------------------------- CSRF


def _post_routes(app):
    return [(m, p) for m, p in _routes(app) if m in ("POST", "PUT", "PATCH", "DELETE") and (m, p) not in PUBLIC]


def test_csrf_is_enforced_on_every_state_changing_route(world):
    admin = world.login("root")
    before = counts(world)
    routes = _post_routes(world.app)
    assert {
        "/logout",
        "/clients",
        "/review/{dot_id}",
        "/review/export",
        "/admin/users",
        "/api/v1/photos",
        "/api/v1/review/photos/{assessment_id}/undo",
    } <= {p for _, p in routes}
    for method, path in routes:
        url = _fill(path, world.ids["a"]["dot"] if "dot_id" in path else 1)
        for token in (None, "wrong", admin.csrf[:-2] + "xx"):
            data = {
                "decision": "accept",
                "external_id": "CSRF",
                "username": "mallory",
                "clinic": "clinic-a",
                "role": "admin",
                "password": "x" * 12,
                "name": "t",
                "active": "false",
                "region": "crown",
                "date": "2026-01-01",
                "kind": "baseline",
                "client": "CSRF",
            }
            if token is not None:
                data["csrf_token"] = token
            files = {"photos": ("x.png", noise_png(3), "image/png")} if "upload" in path else None
            if path == "/api/v1/photos":
                files = {"file": ("x.png", noise_png(3), "image/png")}
            r = admin.request(method, url, data=data, files=files, follow_redirects=False)
            assert r.status_code == 403, (method, path, token, r.status_code)
            headers = {"X-CSRF-Token": token or ""}
            r = admin.request(method, url, data=data, files=files, headers=headers, follow_redirects=False)
            assert r.status_code == 403, (method, path, "header", token, r.status_code)
    assert counts(world) == before
    # still logged in (logout without a token did nothing); with the token it works
    assert admin.get("/").status_code == 200
    r = admin.post("/clients", data={"external_id": "CSRF-OK", "csrf_token": admin.csrf}, follow_redirects=False)
    assert r.status_code == 303


def test_login_form_needs_its_csrf_token(world):
    c = world.client()
    r = c.post("/login", data={"username": "a-staff", "password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 403
    r = c.post(
        "/login", data={"username": "a-staff", "password": PASSWORD, "csrf_token": "forged"}, follow_redirects=False
    )
    assert r.status_code == 403
    other = world.client()
    token = login_token(other)  # a token tied to another browser's pre-login cookie
    login_token(c)
    r = c.post(
        "/login", data={"username": "a-staff", "password": PASSWORD, "csrf_token": token}, follow_redirects=False
    )
    assert r.status_code == 403


def test_bearer_requests_need_no_csrf_but_sessions_cannot_hide_behind_the_api(world):
    assert upload(world.api("a-staff"), noise_png(77), client_id="BEARER").status_code == 201
    page = world.login("a-staff")
    del page.csrf
    assert upload(page, noise_png(78), client_id="BEARER").status_code == 403


# --------------------------------------------------------------------------- login redirect and password hashing


def test_redirect_after_login_stays_on_this_site(world):
    for target, expected in (
        ("/review", "/review"),
        ("//evil.example/x", "/"),
        ("https://evil.example", "/"),
        ("/\\evil.example", "/"),
    ):
        c = world.client()
        r = c.post(
            "/login",
            data={"username": "a-staff", "password": PASSWORD, "csrf_token": login_token(c), "next": target},
            follow_redirects=False,
        )
        assert r.headers["location"] == expected


def test_passwords_are_hashed_with_scrypt(world):
    from pipeline.web.auth import hash_password, verify_password

    with world.ctx.records.session() as s:
        stored = s.scalar(sa.select(User.password_hash).where(User.username == "a-staff"))
    assert stored.startswith("scrypt$16384$8$1$") and PASSWORD not in stored
    assert verify_password(PASSWORD, stored) and not verify_password(PASSWORD + "x", stored)
    assert hash_password(PASSWORD) != hash_password(PASSWORD)  # salted
    assert not verify_password(PASSWORD, "md5$abc") and not verify_password(PASSWORD, "garbage")


# --------------------------------------------------------------------------- headers


def test_security_headers_and_no_external_assets(world):
    c = world.login("root")
    for url in (
        "/",
        f"/clients/{world.ids['a']['client']}",
        "/review",
        "/review/export",
        "/admin/users",
        "/api/docs",
        f"/jobs/{world.ids['a']['job']}",
        "/login",
    ):
        r = c.get(url)
        assert r.status_code == 200, url
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'nonce-" in csp and "frame-ancestors 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["cache-control"] == "no-store"
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", r.text), url
        for script in re.findall(r"<script[^>]*>", r.text):
            assert "nonce=" in script
    report = c.get(f"/reports/assessment/{world.ids['a']['assessment']}")
    assert report.status_code == 200 and "connect-src 'none'" in report.headers["content-security-policy"]
