"""The web app in a real browser (Playwright driving Debian's chromium): log in, add a client, upload a
photo, watch its assessment finish, open its report, review flagged dots with the keyboard shortcuts,
export the labels. Screenshots of each step go to ``test-artifacts/screenshots/`` (under the repository).

The app runs in uvicorn in a background thread on a free loopback port, on a temporary data home,
with its background worker and the classical segmenter (fast). Needs ``playwright`` (the Python
package) and ``/usr/bin/chromium`` (``apt-get install chromium``; ``.ci/run`` installs it);
Playwright's own browser downloads are never used.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import threading
import time
import zipfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from web_support import PASSWORD, dispose, make_world, synthetic_photos

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"


def _unavailable(reason: str) -> None:
    # CI (.ci/run) installs chromium and sets SMP_TEST_REQUIRE_BROWSER: there a missing browser is a failure
    if os.environ.get("SMP_TEST_REQUIRE_BROWSER"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)


try:
    import playwright.sync_api as playwright_sync
except ImportError:
    _unavailable("the playwright package is not installed (pip install the 'dev' extra)")
if not CHROMIUM.exists():
    _unavailable(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base URL, world) of the app served by uvicorn in a thread."""
    import uvicorn

    from pipeline.web.jobs import PipelineAssessor

    home = tmp_path_factory.mktemp("home")
    w = make_world(
        home,
        start_worker=True,
        worker_poll_s=0.5,
        clock=time.time,
        assessor_factory=lambda: PipelineAssessor(None, ("segment.method=classical",)),
    )
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(w.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", w
    server.should_exit = True
    thread.join(30)
    dispose()


@pytest.fixture(scope="module")
def browser():
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True)
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _shot(page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def _log_in(page, base: str, username: str) -> None:
    page.goto(f"{base}/")
    assert "/login" in page.url
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


def test_clinic_and_reviewer_workflow(server, browser, tmp_path):
    base, world = server
    photo = synthetic_photos(tmp_path / "synth", 1, seed=5)[0]
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"{page.url}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"{page.url}: {e}"))

    # clinic staff: log in, add a client, upload a photo, watch the job, open the report
    page.goto(f"{base}/")
    page.fill("#username", "a-staff")
    page.fill("#password", "wrong password!")
    page.click("button[type=submit]")
    assert "Wrong username or password" in page.inner_text("[role=alert]")
    _shot(page, "01-login-refused")
    assert [p for p in problems if "401" not in p] == []  # the refused login's own answer is a 401
    problems.clear()
    page.fill("#username", "a-staff")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")
    page.fill("#external_id", "C-100")
    page.click("text=Add client")
    page.wait_for_url(f"{base}/clients/*")
    assert "Client C-100" in page.inner_text("h1")
    page.fill("#region", "crown")
    page.fill("#date", "2026-03-01")
    page.select_option("#kind", "session")
    page.fill("#session", "1")
    page.select_option("#view", "closeup")
    page.set_input_files("#photos", str(photo))
    _shot(page, "02-upload-form")
    page.click("#upload-button")
    page.wait_for_url(f"{base}/jobs/*")
    page.wait_for_selector("#job-done", state="visible", timeout=120_000)
    assert page.inner_text("#job-status") == "done"
    assert page.eval_on_selector("#job-progress", "e => e.value") == 1
    _shot(page, "03-job-done")
    page.click("#report-link")
    page.wait_for_url(f"{base}/reports/assessment/*")
    page.wait_for_load_state("load")
    assert len(page.content()) > 2000
    _shot(page, "04-report")
    page.goto(f"{base}/clients/1")
    assert "report" in page.inner_text("main")
    _shot(page, "05-client")
    page.click("text=Log out")
    page.wait_for_url(f"{base}/login")

    # reviewer: the queue, decisions by keyboard, the label export
    _log_in(page, base, "a-reviewer")
    page.goto(f"{base}/review")
    page.wait_for_selector(".dot.current")
    cards = page.query_selector_all(".dot")
    assert len(cards) >= 2
    first, second = (c.get_attribute("data-dot") for c in cards[:2])
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('.dot img')).slice(0, 2)"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    _shot(page, "06-review-queue")
    page.keyboard.press("a")
    page.wait_for_selector(f'.dot.decided[data-dot="{first}"]')
    page.wait_for_selector(f'.dot.current[data-dot="{second}"]')
    page.keyboard.press("2")
    page.wait_for_selector(f'.dot.decided[data-dot="{second}"]')
    assert "relabel → faded" in page.inner_text(f'.dot[data-dot="{second}"] [data-verdict]')
    _shot(page, "07-reviewed")
    from pipeline.records.schema import ReviewDecision

    with world.ctx.records.session() as s:
        decisions = {(d.dot_id, d.decision, d.new_label, d.reviewer) for d in s.scalars(sa.select(ReviewDecision))}
    assert decisions == {(int(first), "accept", None, "a-reviewer"), (int(second), "relabel", "faded", "a-reviewer")}

    page.goto(f"{base}/review/export")
    _shot(page, "08-export")
    with page.expect_download() as info:
        page.click("#export-button")
    download = info.value
    target = tmp_path / download.suggested_filename
    download.save_as(str(target))
    archive = zipfile.ZipFile(io.BytesIO(target.read_bytes()))
    manifest = next(n for n in archive.namelist() if n.endswith("/manifest.csv"))
    assert archive.read(manifest).decode().count("\n") == 2, "header and the one reviewed photo"
    assert any(n.endswith("/dots.csv") for n in archive.namelist())
    context.close()
    assert not problems, problems


def _settled(page) -> None:
    """Wait until the photo review page has no request in flight."""
    page.wait_for_function("() => document.getElementById('review').dataset.pending === '0'")


def test_photo_review_by_keyboard_and_mouse(server, browser, tmp_path):
    """A reviewer judges a photo's dots on the photo review page and the export holds exactly those acts."""
    import cv2
    import numpy as np
    import pandas as pd
    from web_support import upload

    base, world = server
    photo = synthetic_photos(tmp_path / "synth", 1, seed=8)[0]
    api = world.api("a-staff")
    sent = upload(api, photo, client_id="C-200", view="closeup")
    assert sent.status_code == 201, sent.text
    deadline = time.monotonic() + 120
    while (job := api.get(f"/api/v1/jobs/{sent.json()['job']['id']}").json())["status"] != "done":
        assert job["status"] != "failed" and time.monotonic() < deadline, job
        time.sleep(0.3)
    aid = job["assessment_id"]
    state = world.api("a-reviewer").get(f"/api/v1/review/photos/{aid}").json()
    W, H = state["width"], state["height"]
    assert len(state["dots"]) >= 3

    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"{page.url}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"{page.url}: {e}"))
    _log_in(page, base, "a-reviewer")
    page.goto(f"{base}/clients/{sent.json()['client_id']}")
    page.click(f'a[href="/review/photo/{aid}"]')
    page.wait_for_selector("#review[data-ready='1']")
    review = page.locator("#review")

    def at(x: float, y: float) -> tuple[float, float]:
        """Screen position of photo pixel (x, y) (pixel centres at integers)."""
        box = page.locator("#photo").bounding_box()
        return box["x"] + (x + 0.5) * box["width"] / W, box["y"] + (y + 0.5) * box["height"] / H

    # keyboard: Tab and Shift+Tab move, c confirms, x rejects (each moves on to the next unreviewed dot)
    first = review.get_attribute("data-selected")
    page.keyboard.press("Tab")
    assert review.get_attribute("data-selected") != first
    page.keyboard.press("Shift+Tab")
    assert review.get_attribute("data-selected") == first
    page.keyboard.press("c")
    _settled(page)
    second = review.get_attribute("data-selected")
    assert second != first
    page.keyboard.press("x")
    _settled(page)
    # a missed dot: a, then a click where it is (zoomed in: clicks still land on photo pixels)
    page.keyboard.press("+")
    page.evaluate("document.getElementById('stage').scrollTo(0, 0)")
    assert page.locator("#photo").bounding_box()["width"] > page.locator("#stage").bounding_box()["width"]
    page.keyboard.press("a")
    page.mouse.click(*at(100, 80))
    _settled(page)
    page.keyboard.press("Escape")
    page.keyboard.press("0")
    # hair painted with the brush by a mouse drag; a scalp stroke painted by mistake, taken back with Ctrl+Z
    page.keyboard.press("h")
    page.mouse.move(*at(200, 150))
    page.mouse.down()
    page.mouse.move(*at(300, 150), steps=12)
    page.mouse.up()
    _settled(page)
    # background: a polygon (g, three corners, Enter)
    page.keyboard.press("b")
    page.keyboard.press("g")
    for x, y in ((400, 350), (600, 350), (600, 450)):
        page.mouse.click(*at(x, y))
    page.keyboard.press("Enter")
    _settled(page)
    assert "background polygon" in page.inner_text("#undo")
    page.keyboard.press("s")
    page.mouse.move(*at(200, 300))
    page.mouse.down()
    page.mouse.move(*at(320, 300), steps=8)
    page.mouse.up()
    _settled(page)
    assert "scalp brush stroke" in page.inner_text("#undo")
    page.keyboard.press("Control+z")
    _settled(page)
    assert "background polygon" in page.inner_text("#undo")
    page.keyboard.press("Escape")
    page.keyboard.press("d")
    _settled(page)
    assert "marked done by a-reviewer" in page.inner_text("#done-state")
    assert page.inner_text("#message").startswith("Marked done")
    page.evaluate("window.scrollTo(0, 0)")
    _shot(page, "09-photo-review")

    # the export holds exactly those acts
    page.goto(f"{base}/review/export")
    with page.expect_download() as info:
        page.click("#export-button")
    target = tmp_path / info.value.suggested_filename
    info.value.save_as(str(target))
    archive = zipfile.ZipFile(io.BytesIO(target.read_bytes()))
    archive.extractall(tmp_path / "export")
    folder = next((tmp_path / "export").glob(f"*/{sent.json()['sha256'][:16]}"))
    manifest = pd.read_csv(folder.parent / "manifest.csv", keep_default_na=False)
    row = manifest[manifest["image"].str.startswith(folder.name)].iloc[0]
    assert row["dots"] == f"{folder.name}/dots.csv", "marked done: the dots teach"
    by_id = {d["id"]: d for d in state["dots"]}
    dots = pd.read_csv(folder / "dots.csv")
    human = dots[dots["visible"]]
    assert sorted(human["review"]) == ["added", "confirmed"]
    assert human.loc[human["review"] == "confirmed", "dot_id"].tolist() == [by_id[int(first)]["index"]]
    added = human[human["review"] == "added"].iloc[0]
    assert abs(added["x"] - 100) < 1 and abs(added["y"] - 80) < 1
    assert set(dots.loc[~dots["visible"], "review"]) == {"unreviewed"}
    assert len(dots) == len(state["dots"]), "every detection but the rejected one, and the added dot"
    assert pd.read_csv(folder / "rejected.csv")["dot_id"].tolist() == [by_id[int(second)]["index"]]
    mask = cv2.imread(str(folder / "mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (H, W)
    assert mask[150, 200] == 2 and mask[150, 250] == 2 and mask[150, 300] == 2, "the hair stroke"
    assert mask[300, 250] == 255, "the undone scalp stroke"
    painted = np.argwhere(mask != 255)
    assert mask[420, 580] == 0 and mask[360, 410] == 255, "the background triangle"
    assert set(np.unique(mask)) == {0, 2, 255} and painted[:, 0].min() > 130 and painted[:, 0].max() < 452
    context.close()
    assert not problems, problems
