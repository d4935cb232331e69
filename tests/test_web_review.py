"""The photo review page (pipeline/web/photo_review.py) and the label export it feeds (pipeline/web/export.py):
confirm, reject, add, paint, done and undo through the JSON API under the app's session, CSRF and tenancy
rules; bad input refused; and an export that holds only what a person decided, read back by smp train's
dataset reader."""

from __future__ import annotations

import io
import json
import zipfile

import cv2
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from web_support import dispose, make_world, synthetic_photos, upload

from pipeline.records.review import MAX_SHAPE_POINTS, Act
from pipeline.records.schema import AddedDot, Assessment, DoneMark, Dot, Job, ReviewDecision, ReviewShape, User
from pipeline.web.export import paint_mask

ACT_TABLES = (ReviewDecision, AddedDot, ReviewShape, DoneMark)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return synthetic_photos(tmp_path_factory.mktemp("synth"), 4, seed=21)


@pytest.fixture(scope="module")
def world(tmp_path_factory, photos):
    """Clinic a: client A-1 with two visits, A-2 with one; clinic b: B-1. Every photo assessed."""
    w = make_world(tmp_path_factory.mktemp("home"))
    sent = [
        ("a-staff", photos[0], "A-1", "2026-03-01"),
        ("a-staff", photos[1], "A-1", "2026-06-01"),
        ("a-staff", photos[2], "A-2", "2026-03-02"),
        ("b-staff", photos[3], "B-1", "2026-03-03"),
    ]
    ids = []
    for user, photo, client, day in sent:
        r = upload(w.api(user), photo, client_id=client, date=day, view="closeup")
        assert r.status_code == 201, r.text
        ids.append(r.json())
    assert w.drain() == 4
    with w.ctx.records.session() as s:
        w.assessments = [
            s.scalar(sa.select(Assessment.id).where(Assessment.photo_id == sub["photo_id"])) for sub in ids
        ]
        w.clients = [sub["client_id"] for sub in ids]
    yield w
    dispose()


@pytest.fixture
def clean(world):
    """The world with no review acts (each test starts from unreviewed photos)."""
    with world.ctx.records.transaction() as s:
        for table in ACT_TABLES:
            s.execute(sa.delete(table))
    return world


def _post(c, path, body=None, csrf=True):  # type: ignore[no-untyped-def]
    headers = {"X-CSRF-Token": c.csrf} if csrf and hasattr(c, "csrf") else {}
    return c.post(path, json=body if body is not None else {}, headers=headers)


def _api(assessment_id: int, action: str = "") -> str:
    return f"/api/v1/review/photos/{assessment_id}" + (f"/{action}" if action else "")


def _dots(world, assessment_id):  # type: ignore[no-untyped-def]
    with world.ctx.records.session() as s:
        return s.scalars(sa.select(Dot).where(Dot.assessment_id == assessment_id).order_by(Dot.dot_index)).all()


def _size(world, assessment_id):  # type: ignore[no-untyped-def]
    state = world.api("a-reviewer").get(_api(assessment_id)).json()
    return state["width"], state["height"]


def _counts(world) -> dict[str, int]:
    with world.ctx.records.session() as s:
        return {t.__tablename__: s.scalar(sa.select(sa.func.count()).select_from(t)) for t in ACT_TABLES}


# --------------------------------------------------------------------------- the page


def test_the_page_shows_the_photo_and_every_dot(clean):
    world, aid = clean, clean.assessments[0]
    reviewer = world.login("a-reviewer")
    page = reviewer.get(f"/review/photo/{aid}")
    assert page.status_code == 200
    assert 'id="photo"' in page.text and "<kbd>c</kbd> confirm" in page.text and "Ctrl+Z" in page.text
    state = json.loads(page.text.split('id="review-state">')[1].split("</script>")[0])
    dots = _dots(world, aid)
    assert len(dots) > 5 and [d["id"] for d in state["dots"]] == [d.id for d in dots]
    assert {d["state"] for d in state["dots"]} == {"unreviewed"} and state["done"] is None
    image = reviewer.get(f"/review/photo/{aid}/image")
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    decoded = cv2.imdecode(np.frombuffer(image.content, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape[:2] == (state["height"], state["width"])
    # reached from the review queue and the client's page
    assert f'href="/review/photo/{aid}#dot-' in reviewer.get("/review?date_from=2026-03-01&date_to=2026-03-01").text
    assert f'href="/review/photo/{aid}"' in reviewer.get(f"/clients/{world.clients[0]}").text
    assert f'href="/review/photo/{aid}"' not in world.login("a-staff").get(f"/clients/{world.clients[0]}").text
    with world.ctx.records.session() as s:
        job_id = s.scalar(sa.select(Job.id).where(Job.assessment_id == aid))
    assert f'href="/review/photo/{aid}"' in reviewer.get(f"/jobs/{job_id}").text
    assert world.login("root").get(f"/review/photo/{aid}").status_code == 200


def test_roles_and_another_clinics_photo(clean):
    world = clean
    aid, other = world.assessments[0], world.assessments[3]
    staff = world.login("a-staff")
    assert staff.get(f"/review/photo/{aid}").status_code == 403
    assert _post(staff, _api(aid, "done")).status_code == 403
    b = world.login("b-reviewer")
    dot = _dots(world, aid)[0]
    for url in ("/review/photo/{}", "/review/photo/{}/image", "/api/v1/review/photos/{}"):
        r, missing = b.get(url.format(aid)), b.get(url.format(999_999))
        assert r.status_code == missing.status_code == 404, url
        assert "A-1" not in r.text
    before = _counts(world)
    for action, body in (
        ("decisions", {"dot_id": dot.id, "decision": "accept"}),
        ("dots", {"x": 5, "y": 5}),
        ("shapes", {"label": "hair", "kind": "brush", "points": [[5, 5]], "radius_px": 3}),
        ("done", {}),
        ("undo", {}),
    ):
        r = _post(b, _api(aid, action), body)
        assert r.status_code == 404 and r.json() == {"detail": "not found"}, action
        assert _post(b, _api(999_999, action), body).json() == r.json()
    # a dot of another photo is no dot of this one, even in one's own clinic
    r = _post(world.login("b-reviewer"), _api(other, "decisions"), {"dot_id": dot.id, "decision": "accept"})
    assert r.status_code == 404 and "no dot" in r.json()["detail"]
    assert _counts(world) == before


def test_csrf_is_required_for_session_posts(clean):
    world, aid = clean, clean.assessments[0]
    reviewer = world.login("a-reviewer")
    dot = _dots(world, aid)[0]
    before = _counts(world)
    for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": reviewer.csrf[:-2] + "xx"}):
        for action, body in (
            ("decisions", {"dot_id": dot.id, "decision": "accept"}),
            ("dots", {"x": 5, "y": 5}),
            ("done", {}),
            ("undo", {}),
        ):
            r = reviewer.post(_api(aid, action), json=body, headers=headers)
            assert r.status_code == 403 and "CSRF" in r.json()["detail"], (action, headers)
    # the token in a form field does not count for a JSON body; a malformed body is still a 403 first
    r = reviewer.post(
        _api(aid, "done"), content=b"csrf_token=" + reviewer.csrf.encode(), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 403
    assert _counts(world) == before
    # an API token needs none (a browser never sends one on its own)
    r = world.api("a-reviewer").post(_api(aid, "decisions"), json={"dot_id": dot.id, "decision": "accept"})
    assert r.status_code == 200 and r.json()["dots"][0]["state"] == "confirmed"


# --------------------------------------------------------------------------- acts and undo


def test_confirm_reject_add_paint_done_and_undo_each(clean):
    world, aid = clean, clean.assessments[0]
    reviewer = world.login("a-reviewer")
    w, h = _size(world, aid)
    dots = _dots(world, aid)

    def act(action, body=None):  # type: ignore[no-untyped-def]
        world.clock.advance(1)
        r = _post(reviewer, _api(aid, action), body)
        assert r.status_code == 200, (action, r.text)
        return r.json()

    s = act("decisions", {"dot_id": dots[0].id, "decision": "accept"})
    assert s["dots"][0]["state"] == "confirmed" and s["dots"][0]["by"] == "a-reviewer"
    assert s["undo"] == f"confirm dot {dots[0].dot_index}"
    s = act("decisions", {"dot_id": dots[1].id, "decision": "reject"})
    assert s["dots"][1]["state"] == "rejected" and s["counts"]["rejected"] == 1
    s = act("dots", {"x": 10.5, "y": h - 0.6})
    assert [(a["x"], a["y"]) for a in s["added"]] == [(10.5, h - 0.6)]
    s = act("shapes", {"label": "hair", "kind": "brush", "points": [[20, 20], [60, 40]], "radius_px": 4})
    s = act("shapes", {"label": "scalp", "kind": "polygon", "points": [[0, 0], [w - 0.5, 0], [w - 0.5, 30]]})
    assert [(x["label"], x["kind"]) for x in s["shapes"]] == [("hair", "brush"), ("scalp", "polygon")]
    s = act("done")
    assert s["done"]["by"] == "a-reviewer" and s["undo"] == "mark the dots done"
    assert act("done")["undo"] == "mark the dots done", "done twice records it once"

    with world.ctx.records.session() as db:
        user_id = db.scalar(sa.select(User.id).where(User.username == "a-reviewer"))
        for table in ACT_TABLES:
            rows = db.scalars(sa.select(table)).all()
            assert rows and all(
                r.reviewer == "a-reviewer"
                and r.reviewer_user_id == user_id
                and r.created_at.tzinfo is not None
                and r.undone_at is None
                for r in rows
            )
        shape = db.scalars(sa.select(ReviewShape).where(ReviewShape.kind == "brush")).one()
        assert shape.points == [[20, 20], [60, 40]] and shape.radius_px == 4

    # undo, newest first: done, polygon, brush, added dot, reject, confirm
    expected = [
        "mark the dots done",
        "scalp polygon",
        "hair brush stroke",
        f"add a dot at {10.5:.0f}, {h - 0.6:.0f}",
        f"reject dot {dots[1].dot_index}",
        f"confirm dot {dots[0].dot_index}",
    ]
    seen = []
    for _ in expected:
        before = world.api("a-reviewer").get(_api(aid)).json()
        seen.append(before["undo"])
        s = act("undo")
    assert seen == expected
    assert s["done"] is None and s["shapes"] == [] and s["added"] == [] and s["undo"] is None
    assert {d["state"] for d in s["dots"]} == {"unreviewed"}
    r = _post(reviewer, _api(aid, "undo"))
    assert r.status_code == 409 and "nothing" in r.json()["detail"]
    with world.ctx.records.session() as db:  # kept, stamped undone
        for table in ACT_TABLES:
            assert all(r.undone_at is not None for r in db.scalars(sa.select(table)))


def test_undo_takes_back_only_the_callers_own_act_and_hides_a_decision_everywhere(clean):
    world, aid = clean, clean.assessments[0]
    flagged = [d for d in _dots(world, aid) if d.blue_shift or d.faded or d.spread]
    dot = flagged[0]
    reviewer, admin = world.login("a-reviewer"), world.login("root")
    queue = "/review?date_from=2026-03-01&date_to=2026-03-01"  # this photo's visit
    assert _post(reviewer, _api(aid, "decisions"), {"dot_id": dot.id, "decision": "reject"}).status_code == 200
    assert _post(admin, _api(aid, "dots"), {"x": 3, "y": 4}).status_code == 200  # same clock: still ordered
    assert f'data-dot="{dot.id}"' not in reviewer.get(queue).text
    s = _post(reviewer, _api(aid, "undo")).json()
    assert s["added"] and s["dots"][[d["id"] for d in s["dots"]].index(dot.id)]["state"] == "unreviewed"
    # the undone decision counts nowhere: the dot is back in the unreviewed queue
    assert f'data-dot="{dot.id}"' in reviewer.get(queue).text
    # a decision from the queue is an act on the photo too, and undone the same way
    r = reviewer.post(
        f"/review/{dot.id}",
        data={"decision": "relabel", "new_label": "faded", "csrf_token": reviewer.csrf},
        headers={"Accept": "application/json"},
    )
    assert r.status_code == 200
    s = reviewer.get(_api(aid)).json()
    assert s["undo"] == "relabel (faded) dot " + str(dot.dot_index)
    assert s["dots"][[d["id"] for d in s["dots"]].index(dot.id)]["state"] == "relabelled"
    assert _post(reviewer, _api(aid, "undo")).json()["undo"] is None
    assert _post(admin, _api(aid, "undo")).json()["added"] == []


@pytest.mark.parametrize(
    "action, body, status, words",
    [
        ("dots", {"x": -1, "y": 5}, 422, "outside the photo"),
        ("dots", {"x": "W", "y": 5}, 422, "x must be a number"),
        ("dots", {"x": True, "y": 5}, 422, "x must be a number"),
        ("dots", {"x": 5}, 422, "y must be a number"),
        ("dots", {"x": 5, "y": 5, "colour": "red"}, 422, "unknown field 'colour'"),
        ("dots", [5, 5], 400, "JSON object"),
        ("shapes", {"label": "skin", "kind": "brush", "points": [[1, 1]], "radius_px": 2}, 422, "label must be"),
        ("shapes", {"label": "hair", "kind": "lasso", "points": [[1, 1]], "radius_px": 2}, 422, "kind must be"),
        ("shapes", {"label": "hair", "kind": "polygon", "points": [[1, 1], [2, 2]]}, 422, "3 to"),
        ("shapes", {"label": "hair", "kind": "brush", "points": [[1, 1]]}, 422, "radius_px"),
        ("shapes", {"label": "hair", "kind": "brush", "points": [[1, 1]], "radius_px": 10_000}, 422, "radius_px"),
        (
            "shapes",
            {"label": "hair", "kind": "polygon", "points": [[1, 1], [2, 2], [3, 1]], "radius_px": 2},
            422,
            "no radius",
        ),
        (
            "shapes",
            {"label": "hair", "kind": "brush", "points": [[1, 1]] * (MAX_SHAPE_POINTS + 1), "radius_px": 2},
            422,
            f"1 to {MAX_SHAPE_POINTS} points",
        ),
        (
            "shapes",
            {"label": "hair", "kind": "brush", "points": [[1, 1], [1e6, 1]], "radius_px": 2},
            422,
            "point 1 (1e+06, 1) is outside",
        ),
        ("shapes", {"label": "hair", "kind": "brush", "points": [[1, 1, 1]], "radius_px": 2}, 422, "[x, y] pair"),
        ("decisions", {"dot_id": "first", "decision": "accept"}, 422, "dot_id"),
        ("decisions", {"dot_id": 10**30, "decision": "accept"}, 422, "dot_id"),
        ("decisions", {"dot_id": 999_999, "decision": "accept"}, 404, "no dot"),
        ("decisions", {"decision": "relabel", "dot_id": 0}, 422, "decision must be one of accept, reject"),
    ],
)
def test_bad_input_is_a_clear_4xx_and_stores_nothing(clean, action, body, status, words):
    world, aid = clean, clean.assessments[0]
    if action == "decisions" and body.get("dot_id") == 0:
        body = {**body, "dot_id": _dots(world, aid)[0].id}
    before = _counts(world)
    r = _post(world.login("a-reviewer"), _api(aid, action), body)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert words in detail and "\n" not in detail and len(detail) < 200
    assert _counts(world) == before


def test_edges_of_the_photo(clean):
    world, aid = clean, clean.assessments[0]
    w, h = _size(world, aid)
    reviewer = world.login("a-reviewer")
    assert _post(reviewer, _api(aid, "dots"), {"x": -0.5, "y": h - 0.51}).status_code == 200
    assert _post(reviewer, _api(aid, "dots"), {"x": w - 0.5, "y": 1}).status_code == 422  # one pixel past
    corners = [[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5]]
    assert (
        _post(reviewer, _api(aid, "shapes"), {"label": "scalp", "kind": "polygon", "points": corners}).status_code
        == 200
    )
    assert (
        reviewer.post(
            _api(aid, "dots"),
            content=b"{not json",
            headers={"X-CSRF-Token": reviewer.csrf, "Content-Type": "application/json"},
        ).status_code
        == 400
    )
    r = reviewer.post(_api(aid, "dots"), data={"x": "1", "y": "1", "csrf_token": reviewer.csrf})
    assert r.status_code == 400 and "not a form" in r.json()["detail"]


# --------------------------------------------------------------------------- the export


def _export(world, username="a-reviewer"):  # type: ignore[no-untyped-def]
    from data.manifest import read_manifest

    c = world.login(username)
    r = c.post("/review/export", data={"csrf_token": c.csrf})
    assert r.status_code == 200, r.text
    archive = zipfile.ZipFile(io.BytesIO(r.content))
    (root,) = {n.split("/")[0] for n in archive.namelist()}
    out = world.home / "unzipped" / root
    archive.extractall(out.parent)
    return read_manifest(out / "manifest.csv"), out


def test_paint_mask_draws_brushes_round_and_polygons_filled_later_over_earlier():
    def shape(label, kind, points, radius=None):  # type: ignore[no-untyped-def]
        detail = {"label": label, "kind": kind, "points": points, "radius_px": radius}
        return Act("shape", 0, "r", None, None, detail)  # type: ignore[arg-type]

    mask = paint_mask(
        [
            shape("scalp", "polygon", [[10, 10], [40, 10], [40, 30], [10, 30]]),
            shape("hair", "brush", [[20, 20], [60, 20]], 3.0),
            shape("background", "brush", [[5, 45]], 2.0),
        ],
        80,
        50,
    )
    assert mask.dtype == np.uint8 and mask.shape == (50, 80)
    assert mask[15, 15] == 1 and mask[28, 38] == 1, "polygon filled"
    assert mask[20, 30] == 2 and mask[17, 30] == 2 and mask[23, 30] == 2, "brush over polygon, 3 px each side"
    assert mask[16, 50] == 255 and mask[24, 50] == 255, "not wider than its radius"
    assert mask[20, 63] == 2 and mask[22, 62] == 2 and mask[20, 64] == 255, "round end: radius 3 past the last point"
    assert mask[20, 17] == 2 and mask[17, 20] == 2, "round start"
    assert mask[45, 5] == 0 and mask[45, 7] == 0 and mask[45, 8] == 255, "a one-point brush is a disc"
    assert mask[0, 0] == 255 and mask[35, 20] == 255 and set(np.unique(mask)) == {0, 1, 2, 255}


def test_export_holds_only_what_a_person_decided(clean):
    from data.dataset import load_photo as load_training_photo

    world = clean
    a0, a1, a2, b0 = world.assessments
    reviewer = world.login("a-reviewer")
    dots = _dots(world, a0)
    w, h = _size(world, a0)

    def act(aid, action, body=None):  # type: ignore[no-untyped-def]
        world.clock.advance(1)
        r = _post(reviewer, _api(aid, action), body)
        assert r.status_code == 200, r.text

    # photo 0: judged, added, painted, done
    act(a0, "decisions", {"dot_id": dots[0].id, "decision": "accept"})
    act(a0, "decisions", {"dot_id": dots[1].id, "decision": "reject"})
    act(a0, "decisions", {"dot_id": dots[2].id, "decision": "reject"})
    act(a0, "decisions", {"dot_id": dots[2].id, "decision": "accept"})  # changed their mind: the latest counts
    act(a0, "dots", {"x": 12.25, "y": 30.5})
    act(a0, "shapes", {"label": "scalp", "kind": "polygon", "points": [[0, 0], [100, 0], [100, 60], [0, 60]]})
    act(a0, "shapes", {"label": "hair", "kind": "brush", "points": [[10, 30], [90, 30]], "radius_px": 5})
    act(a0, "shapes", {"label": "background", "kind": "brush", "points": [[200, 200]], "radius_px": 4})
    act(a0, "undo")  # the background dab is taken back
    act(a0, "done")
    # photo 1 (same client, later visit): one confirmed dot, not done; photo 2 (another client): only painted
    act(a1, "decisions", {"dot_id": _dots(world, a1)[0].id, "decision": "accept"})
    act(a2, "shapes", {"label": "hair", "kind": "polygon", "points": [[5, 5], [50, 5], [5, 50]]})
    # photo of clinic b: an act that was undone is no act
    b = world.login("b-reviewer")
    assert _post(b, _api(b0, "dots"), {"x": 1, "y": 1}).status_code == 200
    assert _post(b, _api(b0, "undo")).status_code == 200

    manifest, out = _export(world)
    assert len(manifest) == 3, "the three reviewed photos of clinic a"
    by_image = {r.image.parent.name: r for r in manifest}
    with world.ctx.records.session() as s:
        sha = {
            aid: s.scalar(sa.select(Assessment).where(Assessment.id == aid)).photo.sha256[:16] for aid in (a0, a1, a2)
        }
    r0, r1, r2 = (by_image[sha[a]] for a in (a0, a1, a2))

    # dots: only photo 0 is done
    assert r0.dots is not None and r1.dots is None and r2.dots is None
    table = pd.read_csv(r0.dots)
    assert list(table.columns) == [
        "dot_id",
        "x",
        "y",
        "diameter_mm",
        "blue_shift",
        "faded",
        "spread",
        "visible",
        "review",
    ]
    human = table[table["visible"]]
    assert sorted(human["review"]) == ["added", "confirmed", "confirmed"]
    assert set(human.loc[human["review"] == "confirmed", "dot_id"]) == {dots[0].dot_index, dots[2].dot_index}
    added = human[human["review"] == "added"].iloc[0]
    assert (added["x"], added["y"]) == (12.25, 30.5) and pd.isna(added["dot_id"])
    unknown = table[~table["visible"]]
    assert set(unknown["review"]) == {"unreviewed"} and len(unknown) == len(dots) - 3
    assert dots[1].dot_index not in set(table["dot_id"].dropna())
    rejected = pd.read_csv(out / sha[a0] / "rejected.csv")
    assert list(rejected.columns) == ["x", "y", "dot_id"] and rejected["dot_id"].tolist() == [dots[1].dot_index]
    np.testing.assert_allclose(rejected[["x", "y"]].to_numpy(), [[dots[1].x, dots[1].y]], atol=1e-3)

    # the masks: painted where painted, 255 elsewhere
    mask0 = cv2.imread(str(r0.mask), cv2.IMREAD_UNCHANGED)
    assert mask0.shape == (h, w) and mask0.dtype == np.uint8
    assert mask0[50, 50] == 1 and mask0[30, 50] == 2 and mask0[34, 50] == 2 and mask0[37, 50] == 1
    assert mask0[200, 200] == 255 and mask0[100, 100] == 255, "the undone dab and the unpainted rest"
    assert set(np.unique(mask0)) == {1, 2, 255}
    assert (cv2.imread(str(r1.mask), cv2.IMREAD_UNCHANGED) == 255).all()
    mask2 = cv2.imread(str(r2.mask), cv2.IMREAD_UNCHANGED)
    assert mask2[10, 10] == 2 and mask2[60, 60] == 255

    # the training reader takes every row: points, visible flags and mask values as written
    for row in manifest:
        photo = load_training_photo(row)
        assert photo.mask.shape == photo.image.shape[:2]
        assert np.array_equal(photo.mask, cv2.imread(str(row.mask), cv2.IMREAD_UNCHANGED))
        if row.dots is None:
            assert not photo.has_points and photo.points.shape == (0, 2)
        else:
            assert photo.has_points
            np.testing.assert_allclose(photo.points, table[["x", "y"]].to_numpy(), atol=1e-3)
            assert photo.visible.tolist() == table["visible"].tolist()

    # provenance: every active act with reviewer and time, and whether the dots teach
    doc = json.loads((out / sha[a0] / "review.json").read_text())
    assert doc["dots_supervised"] is True and "unknown" in doc["dots"]
    assert [a["act"] for a in doc["acts"]] == ["decision"] * 4 + ["added_dot", "shape", "shape", "done"]
    assert all(a["reviewer"] == "a-reviewer" and a["at"] for a in doc["acts"])
    assert json.loads((out / sha[a1] / "review.json").read_text())["dots_supervised"] is False

    # split by client: both photos of A-1 in one split, the split the client's key gives
    from data.importers import assign_split

    assert r0.client == r1.client == f"client-{world.clients[0]}" and r2.client == f"client-{world.clients[2]}"
    assert r0.split == r1.split == assign_split(r0.client) and r2.split == assign_split(r2.client)

    # clinic b exports nothing (its only act was undone); an admin exporting all sees clinic a's three
    b_manifest, _ = _export(world, "b-reviewer")
    assert len(b_manifest) == 0
    assert len(_export(world, "root")[0]) == 3


def test_an_admin_export_keeps_two_clinics_photos_of_the_same_bytes_apart(tmp_path):
    """The same bytes recorded by two clinics are two photos: an export of every clinic holds both."""
    w = make_world(tmp_path / "home")
    try:
        photo = synthetic_photos(tmp_path / "synth", 1, seed=22)[0]
        for user, client in (("a-staff", "A-9"), ("b-staff", "B-9")):
            assert upload(w.api(user), photo, client_id=client).status_code == 201
        assert w.drain() == 2
        with w.ctx.records.session() as s:
            ids = s.scalars(sa.select(Assessment.id).order_by(Assessment.id)).all()
        for reviewer, aid in zip(("a-reviewer", "b-reviewer"), ids):
            c = w.login(reviewer)
            assert _post(c, _api(aid, "done")).status_code == 200
        manifest, out = _export(w, "root")
        assert len(manifest) == 2 and len({r.image.parent for r in manifest}) == 2
        assert {r.client for r in manifest} == {f"client-{i}" for i in (1, 2)}
    finally:
        dispose()
