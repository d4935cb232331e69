"""What leaves the server carries no camera metadata; exports do not linger; files are the server user's own."""

from __future__ import annotations

import io
import os
import stat
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image
from web_support import dispose, make_world, synthetic_photos, upload

from pipeline.one_photo.clean_copy import clean_photo_bytes
from pipeline.one_photo.loading import read_photo_bytes

GPS_IFD, EXIF_IFD = 0x8825, 0x8769
MAKE, MODEL, SERIAL, ORIENTATION, USER_COMMENT = 0x010F, 0x0110, 0xA431, 0x0112, 0x9286


def _tagged(rgb: np.ndarray, fmt: str = "JPEG", orientation: int = 6) -> bytes:
    """A photo whose EXIF has the camera's make, model and serial number, a GPS position and a comment."""
    exif = Image.Exif()
    exif[MAKE], exif[MODEL], exif[ORIENTATION] = "Acme", "Scope 9", orientation
    exif.get_ifd(EXIF_IFD)[SERIAL] = "SN-0042-SECRET"
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (51.0, 30.0, 12.5), 3: "W", 4: (0.0, 7.0, 39.0)})
    buf = io.BytesIO()
    im = Image.fromarray(rgb)
    if fmt == "JPEG":
        im.save(buf, format="JPEG", quality=90, exif=exif.tobytes(), comment=b"clinic north, room 2")
    else:
        info = __import__("PIL.PngImagePlugin", fromlist=["PngInfo"]).PngInfo()
        info.add_text("Author", "Dr Who, clinic north")
        im.save(buf, format="PNG", exif=exif.tobytes(), pnginfo=info)
    return buf.getvalue()


def _assert_clean(data: bytes, orientation: int) -> None:
    with Image.open(io.BytesIO(data)) as im:
        exif = im.getexif()
        assert dict(exif) == ({ORIENTATION: orientation} if orientation != 1 else {}), dict(exif)
        assert not exif.get_ifd(GPS_IFD) and not exif.get_ifd(EXIF_IFD)
        assert "comment" not in im.info and "Author" not in im.info and "xmp" not in im.info
    for secret in (b"SN-0042", b"Acme", b"clinic north", b"Dr Who"):
        assert secret not in data


@pytest.fixture(scope="module")
def rgb(tmp_path_factory):
    photo = synthetic_photos(tmp_path_factory.mktemp("synth"), 1, seed=43)[0]
    return np.asarray(Image.open(photo).convert("RGB"))


@pytest.mark.parametrize("orientation", [1, 6])
def test_a_jpeg_copy_is_lossless_upright_and_without_metadata(rgb, orientation):
    original = _tagged(rgb, orientation=orientation)
    clean, ext = clean_photo_bytes(original)
    assert ext == ".jpg"
    _assert_clean(clean, orientation)
    a, b = read_photo_bytes(original, "a"), read_photo_bytes(clean, "b")
    assert np.array_equal(a.rgb, b.rgb), "the same pixels, read upright the same way"
    # an MPO's second picture (or trailing bytes) does not come along
    assert clean_photo_bytes(original + b"\xff\xd8trailing second picture\xff\xd9")[0] == clean


def test_a_png_copy_is_lossless_and_without_metadata(rgb):
    original = _tagged(rgb, fmt="PNG", orientation=3)
    clean, ext = clean_photo_bytes(original)
    assert ext == ".png"
    _assert_clean(clean, 3)
    assert np.array_equal(read_photo_bytes(original, "a").rgb, read_photo_bytes(clean, "b").rgb)


def test_other_formats_become_the_upright_pixels_as_png(rgb):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="TIFF", tiffinfo={MAKE: "Acme", MODEL: "Scope 9"})
    clean, ext = clean_photo_bytes(buf.getvalue())
    assert ext == ".png" and b"Acme" not in clean
    assert np.array_equal(read_photo_bytes(clean, "b").rgb, rgb)


def test_nothing_that_leaves_the_server_carries_the_cameras_metadata(tmp_path, rgb):
    """Export (photo.jpg), dot crops, the review page's photo and the report: no GPS, serial or make."""
    from pipeline.records.schema import Assessment, Dot

    w = make_world(tmp_path / "home")
    try:
        original = _tagged(rgb)
        assert upload(w.api("a-staff"), original, client_id="P-1").status_code == 201
        assert w.drain() == 1
        with w.ctx.records.session() as s:
            assessment = s.scalars(sa.select(Assessment)).one()
            dot = s.scalars(sa.select(Dot).where(Dot.assessment_id == assessment.id)).first()
        reviewer = w.login("a-reviewer")
        r = reviewer.post(
            f"/api/v1/review/photos/{assessment.id}/dots",
            json={"x": 5, "y": 5},
            headers={"X-CSRF-Token": reviewer.csrf},
        )
        assert r.status_code == 200, r.text
        leaving = {
            "crop": reviewer.get(f"/review/crops/{dot.id}").content,
            "review photo": reviewer.get(f"/review/photo/{assessment.id}/image").content,
            "report": reviewer.get(f"/reports/assessment/{assessment.id}").content,
        }
        r = reviewer.post("/review/export", data={"csrf_token": reviewer.csrf})
        assert r.status_code == 200
        archive = zipfile.ZipFile(io.BytesIO(r.content))
        (photo_name,) = [n for n in archive.namelist() if "/photo." in n]
        exported = archive.read(photo_name)
        _assert_clean(exported, 6)
        assert np.array_equal(read_photo_bytes(exported, "x").rgb, read_photo_bytes(original, "y").rgb)
        import base64
        import re

        for i, b64 in enumerate(re.findall(rb"data:image/[a-z]+;base64,([A-Za-z0-9+/=]+)", leaving["report"])):
            leaving[f"report image {i}"] = base64.b64decode(b64)
        assert len(leaving) > 3, "the report embeds its pictures"
        for name, data in leaving.items():
            assert data and b"SN-0042" not in data and b"Acme" not in data, name
            assert b"Exif\x00\x00" not in data, name
        # the export is not kept on the server once downloaded
        exports = w.home / "exports"
        assert exports.is_dir() and not list(exports.iterdir())
    finally:
        dispose()


def test_old_exports_are_removed_and_the_server_files_are_private(tmp_path):
    from pipeline.web.export import remove_old_exports

    w = make_world(tmp_path / "home")
    try:
        photo = synthetic_photos(tmp_path / "synth", 1, seed=44, width=400, height=300)[0]
        assert upload(w.api("a-staff"), photo, client_id="P-2").status_code == 201
        assert w.drain() == 1
        home = w.home
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        assert stat.S_IMODE((home / "records.db").stat().st_mode) == 0o600
        created = [p for p in home.rglob("*") if p.stat().st_mtime >= time.time() - 600]
        assert created
        for p in created:
            mode = stat.S_IMODE(p.stat().st_mode)
            assert mode & 0o077 == 0, (p, oct(mode))
        exports = home / "exports"
        exports.mkdir(exist_ok=True)
        stale, fresh = exports / "review-old.zip", exports / "review-new.zip"
        stale.write_bytes(b"x")
        fresh.write_bytes(b"y")
        os.utime(stale, (time.time() - 7200, time.time() - 7200))
        assert remove_old_exports(exports, time.time(), 3600) == [stale]
        assert fresh.exists() and not stale.exists()
    finally:
        dispose()


def test_an_export_goes_on_without_a_photo_lost_from_the_store(tmp_path):
    from pipeline.records.schema import Assessment

    w = make_world(tmp_path / "home")
    try:
        for i, seed in enumerate((45, 46)):
            photo = synthetic_photos(tmp_path / f"s{i}", 1, seed=seed, width=400, height=300)[0]
            assert upload(w.api("a-staff"), photo, client_id=f"L-{i}").status_code == 201
        assert w.drain() == 2
        reviewer = w.login("a-reviewer")
        with w.ctx.records.session() as s:
            assessments = s.scalars(sa.select(Assessment).order_by(Assessment.id)).all()
            lost = w.ctx.store.path(assessments[0].photo.stored_path)
            lost_sha = assessments[0].photo.sha256[:16]
        for a in assessments:
            assert (
                reviewer.post(
                    f"/api/v1/review/photos/{a.id}/done", json={}, headers={"X-CSRF-Token": reviewer.csrf}
                ).status_code
                == 200
            )
        Path(lost).unlink()
        r = reviewer.post("/review/export", data={"csrf_token": reviewer.csrf})
        assert r.status_code == 200 and r.headers["X-Export-Photos"] == "1"
        assert r.headers["X-Export-Missing"] == lost_sha
    finally:
        dispose()
