"""Shared set-up of the web app tests (tests/test_web_*.py): a temporary data home with two clinics,
users of every role, synthetic photos, a fake clock, and helpers to log in and upload."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.records import db as records_db
from pipeline.web import ThrottleSettings, WebSettings, create_app
from pipeline.web.auth import create_user, issue_token
from pipeline.web.jobs import PipelineAssessor

PASSWORD = "correct horse battery"
#: username -> (clinic, role)
USERS = {
    "a-staff": ("clinic-a", "staff"),
    "a-reviewer": ("clinic-a", "reviewer"),
    "b-staff": ("clinic-b", "staff"),
    "b-reviewer": ("clinic-b", "reviewer"),
    "root": ("clinic-a", "admin"),
}
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


class FakeClock:
    """Seconds since the epoch, moved by hand (no test sleeps)."""

    def __init__(self, start: float = 1_790_000_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def synthetic_photos(out: Path, n: int, seed: int = 3, width: int = 640, height: int = 480) -> list[Path]:
    """``n`` small synthetic close-ups with SMP dots (JPEG), from the project's generator."""
    from data.card import load_card
    from data.config import load_settings
    from data.flags import load_flag_settings
    from data.synth.generate import generate_images
    from data.synth.settings import SynthSettings

    # a clinic close-up with a card and a share of aged dots, so that the pages have flagged dots to show
    cfg = load_settings(
        SynthSettings,
        None,
        [
            f"image.width={width}",
            f"image.height={height}",
            "card.probability=1",
            "camera.px_per_mm=[14, 20]",
            "camera.macro_probability=0",
            "dots.aged_fraction=[0.3, 0.4]",
            "dots.contrast_dl=[22, 36]",
            "hair.long_fraction=[0, 0.05]",
            "hair.follicle_density_per_cm2=[20, 60]",
        ],
        default="synth/closeup.yaml",
    )
    made = list(generate_images(out, n, cfg, load_card(), load_flag_settings(), seed))
    return [m.folder / "photo.jpg" for m in made]


def synthetic_series(out: Path, seed: int = 2, width: int = 640, height: int = 480) -> list[tuple[str, Path]]:
    """One synthetic client series: (visit folder name, photo) per visit, in visit order."""
    from data.card import load_card
    from data.config import load_settings
    from data.flags import load_flag_settings
    from data.synth.generate import generate_series
    from data.synth.settings import SynthSettings

    cfg = load_settings(
        SynthSettings, None, [f"image.width={width}", f"image.height={height}"], default="synth/closeup.yaml"
    )
    made = list(generate_series(out, 1, cfg, load_card(), load_flag_settings(), seed))
    return [(m.folder.name, m.folder / "photo.jpg") for m in made]


def noise_png(seed: int, size: tuple[int, int] = (320, 256)) -> bytes:
    """A small valid PNG (random pixels), distinct per seed; by default just over the web app's
    minimum photo size (WebSettings.min_photo_side)."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class World:
    """An app on a temporary data home, its users (``tokens``: an API token per username)."""

    app: object
    home: Path
    clock: FakeClock
    settings: WebSettings
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def ctx(self):  # type: ignore[no-untyped-def]
        return self.app.state.ctx  # type: ignore[attr-defined]

    def client(self, **kw):  # type: ignore[no-untyped-def]
        from fastapi.testclient import TestClient

        return TestClient(self.app, **kw)

    def login(self, username: str, password: str = PASSWORD, **kw):  # type: ignore[no-untyped-def]
        """A TestClient logged in as ``username``; its ``csrf`` attribute holds the session's CSRF token."""
        c = self.client(**kw)
        r = c.post(
            "/login",
            data={"username": username, "password": password, "csrf_token": login_token(c)},
            follow_redirects=False,
        )
        assert r.status_code == 303, (r.status_code, r.text[:300])
        c.csrf = csrf_of(c.get("/logout").text)  # type: ignore[attr-defined]
        return c

    def api(self, username: str, **kw):  # type: ignore[no-untyped-def]
        """A TestClient sending ``username``'s API token."""
        return self.client(headers={"Authorization": f"Bearer {self.tokens[username]}"}, **kw)

    def drain(self) -> int:
        return self.ctx.jobs.drain()


def login_token(client) -> str:  # type: ignore[no-untyped-def]
    """The login form's CSRF token (and its pre-login cookie, kept by the client)."""
    return csrf_of(client.get("/login").text)


def csrf_of(html: str) -> str:
    m = CSRF_INPUT.search(html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def make_world(home: Path, **overrides) -> World:  # type: ignore[no-untyped-def]
    """A new app with the users of :data:`USERS` (and an API token each), the classical segmenter."""
    clock = overrides.pop("clock", None) or FakeClock()
    settings = WebSettings(
        home=home,
        start_worker=overrides.pop("start_worker", False),
        clock=clock,
        throttle=overrides.pop("throttle", ThrottleSettings()),
        assessor_factory=overrides.pop("assessor_factory", None)
        or (lambda: PipelineAssessor(None, ("segment.method=classical",))),
        **overrides,
    )
    app = create_app(settings)
    world = World(app=app, home=home, clock=clock, settings=settings)
    with world.ctx.records.transaction() as s:
        for name, (clinic, role) in USERS.items():
            user_id = create_user(s, name, clinic=clinic, role=role, password=PASSWORD)
            world.tokens[name] = issue_token(s, user_id, "tests")[1]
    return world


def upload(
    client,
    photo: bytes | Path,
    *,
    name: str = "photo.jpg",
    client_id: str = "C-1",
    region: str = "crown",
    date: str = "2026-03-01",
    kind: str = "session",
    session: str | None = "1",
    **extra,
):  # type: ignore[no-untyped-def]
    """POST /api/v1/photos (bearer or session client; a session client also sends its CSRF header)."""
    data = photo.read_bytes() if isinstance(photo, Path) else photo
    fields = {"client": client_id, "region": region, "date": date, "kind": kind, **extra}
    if session is not None:
        fields["session"] = session
    headers = {"X-CSRF-Token": client.csrf} if hasattr(client, "csrf") else {}
    return client.post(
        "/api/v1/photos", data=fields, files={"file": (name, data, "application/octet-stream")}, headers=headers
    )


def dispose() -> None:
    records_db.close_all()
