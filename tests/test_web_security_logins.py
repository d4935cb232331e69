"""Web security: login throttling, sessions (cookie, logout, expiry, deactivation), and whose X-Forwarded-For counts."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from web_support import PASSWORD, dispose, login_token, make_world

from pipeline.records.schema import User, WebSession

# --------------------------------------------------------------------------- login throttling and sessions


def _attempt(world, password, address="10.0.0.1", username="a-reviewer"):
    c = world.client(client=(address, 5000))
    return c.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": login_token(c)},
        follow_redirects=False,
    )


def test_failed_logins_are_slowed_down_then_locked(tmp_path):
    w = make_world(tmp_path)
    try:
        cfg = w.settings.throttle
        for _ in range(cfg.free_failures):
            assert _attempt(w, "wrong password").status_code == 401
        # now each attempt must wait, and a throttled attempt is refused even with the right password
        r = _attempt(w, PASSWORD)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1 and "Try again" in r.text
        delays = []
        while True:
            failures = len(delays) + cfg.free_failures
            delay = min(cfg.max_delay_s, cfg.base_delay_s * 2 ** (failures - cfg.free_failures))
            w.clock.advance(delay - 0.5)
            assert _attempt(w, "wrong password").status_code == 429, "too early"
            w.clock.advance(0.5)
            r = _attempt(w, "wrong password")
            delays.append(delay)
            if failures + 1 >= cfg.lockout_failures:
                break
            assert r.status_code == 401
        assert delays == sorted(delays) and delays[-1] > delays[0], "the wait grows"
        # locked: the right password does not help, another address is not affected
        w.clock.advance(cfg.max_delay_s)
        assert _attempt(w, PASSWORD).status_code == 429
        assert _attempt(w, PASSWORD, address="10.0.0.2").status_code == 303
        w.clock.advance(cfg.lockout_s + 1)
        assert _attempt(w, PASSWORD).status_code == 303
        # a success clears the count
        assert _attempt(w, "wrong password").status_code == 401
        assert _attempt(w, "wrong password").status_code == 401
    finally:
        dispose()


def test_unknown_users_are_throttled_too(tmp_path):
    w = make_world(tmp_path)
    try:
        for _ in range(w.settings.throttle.free_failures):
            assert _attempt(w, "x", username="nobody").status_code == 401
        assert _attempt(w, "x", username="nobody").status_code == 429
    finally:
        dispose()


def test_session_cookie_logout_expiry_and_deactivation(tmp_path):
    w = make_world(tmp_path)
    try:
        c = w.client()
        r = c.post(
            "/login",
            data={"username": "A-Staff", "password": PASSWORD, "csrf_token": login_token(c)},
            follow_redirects=False,
        )
        cookie = r.headers["set-cookie"]
        assert "smp_session=" in cookie and "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
        token = c.cookies.get("smp_session")
        with w.ctx.records.session() as s:  # only a hash of the token is stored
            assert token not in {h for h in s.scalars(sa.select(WebSession.token_hash))}
        page = w.login("a-staff")
        assert page.get("/").status_code == 200
        logged_out = page.cookies.get("smp_session")
        assert page.post("/logout", data={"csrf_token": page.csrf}, follow_redirects=False).status_code == 303
        stolen = w.client(cookies={"smp_session": token})
        assert stolen.get("/").status_code == 200
        # logging out one session does not end the others; the logged-out cookie is dead
        replay = w.client(cookies={"smp_session": logged_out})
        assert replay.get("/", follow_redirects=False).status_code == 303
        # expiry
        w.clock.advance(w.settings.session_lifetime_s + 1)
        assert stolen.get("/", follow_redirects=False).status_code == 303
        # deactivated users are out at once, tokens included
        live = w.login("b-staff")
        api = w.api("b-staff")
        assert api.get("/api/v1/clients").status_code == 200
        with w.ctx.records.transaction() as s:
            s.execute(sa.update(User).where(User.username == "b-staff").values(active=False))
        assert live.get("/", follow_redirects=False).status_code == 303
        assert api.get("/api/v1/clients").status_code == 401
    finally:
        dispose()


# --------------------------------------------------------------------------- which address a login comes from


def _serve_in_thread(app, options):  # type: ignore[no-untyped-def]
    import threading
    import time

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, **{**options, "log_level": "warning"}))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            return server, thread
        time.sleep(0.05)
    raise AssertionError("uvicorn did not start")


@pytest.mark.parametrize("allow", [None, "127.0.0.1"])
def test_forwarded_headers_are_believed_only_from_the_configured_proxies(tmp_path, allow):
    """By default X-Forwarded-For is ignored: varying it does not escape the per-address login throttle."""
    import socket

    import httpx2 as httpx

    from pipeline.commands.serve import forwarded_allow_ips, uvicorn_options

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    w = make_world(tmp_path)
    server, thread = _serve_in_thread(w.app, uvicorn_options("127.0.0.1", port, forwarded_allow_ips(allow)))
    try:
        statuses = []
        for i in range(w.settings.throttle.free_failures + 1):
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
                token = login_token(c)
                r = c.post(
                    "/login",
                    data={"username": "a-reviewer", "password": "wrong", "csrf_token": token},
                    headers={"X-Forwarded-For": f"203.0.113.{i + 1}"},
                )
                statuses.append(r.status_code)
        free = [401] * w.settings.throttle.free_failures
        assert statuses == (free + [429] if allow is None else free + [401])
    finally:
        server.should_exit = True
        thread.join(10)
        dispose()
