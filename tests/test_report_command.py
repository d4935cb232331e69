"""Reports: bad folders, the kind detected, `smp report`, names by client and visit, number wording, package data."""

import datetime as dt
import json
import re
from html import unescape
from pathlib import Path

import pytest
from report_helpers import _copy, _edit_json, _self_contained, _text, _track_doc, _track_folder

from pipeline.cli import main
from pipeline.report import ReportError, detect_kind, render_assessment, render_comparison, render_timeline
from pipeline.report.wording import fmt_date, fmt_int, fmt_month, fmt_num, fmt_pct, fmt_points, fmt_signed

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- errors and the command


def test_bad_folders_raise_one_line(made, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    bad_json = _copy(made["assessment"], tmp_path / "badjson")
    (bad_json / "assessment.json").write_text("{not json")
    wrong = _copy(made["assessment"], tmp_path / "wrong")
    _edit_json(wrong / "assessment.json", lambda d: d.update(schema="smp-other/9"))
    cases = [
        (render_assessment, tmp_path / "missing", "no such folder"),
        (render_assessment, empty, "no assessment.json"),
        (render_assessment, bad_json, "not valid JSON"),
        (render_assessment, wrong, "schema is 'smp-other/9'"),
        (render_comparison, made["assessment"], "no comparison.json"),
        (render_timeline, empty, "no track.json"),
    ]
    for fn, folder, reason in cases:
        with pytest.raises(ReportError) as info:
            fn(folder)
        assert reason in str(info.value) and "\n" not in str(info.value)
    assert issubclass(ReportError, ValueError)


def test_detect_kind(made, tmp_path):
    assert detect_kind(made["assessment"]) == ("assessment", made["assessment"])
    assert detect_kind(made["comparison"] / "comparison.json") == ("comparison", made["comparison"])
    one = _track_folder(tmp_path / "track" / "crown", _track_doc())
    assert detect_kind(tmp_path / "track") == ("timeline", one)


def test_cli_report(made, tmp_path, capsys):
    out = tmp_path / "out" / "assessment.html"
    assert main(["report", str(made["assessment"]), "--out", str(out), "--title", "Client A"]) == 0
    html = out.read_text(encoding="utf-8")
    assert "<title>Client A</title>" in html
    _self_contained(html)
    track = tmp_path / "track"
    _track_folder(track / "crown", _track_doc())
    assert main(["report", str(track), "--out", str(tmp_path / "t.html")]) == 0
    assert "SMP timeline: C-17 / crown" in (tmp_path / "t.html").read_text(encoding="utf-8")
    capsys.readouterr()

    _track_folder(track / "front", _track_doc())
    for args in (
        [str(track), "--out", str(tmp_path / "x.html")],
        [str(tmp_path / "nope"), "--out", str(tmp_path / "x.html")],
        [str(made["assessment"]), "--out", str(tmp_path)],
    ):
        assert main(["report", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("smp report: error: ") and err.count("\n") == 1
    assert not (tmp_path / "x.html").exists()


def _title(html: str) -> str:
    return unescape(html.split("<title>")[1].split("</title>")[0])


def test_reports_are_named_by_client_region_and_visit(made, tmp_path, capsys):
    """What `smp assess/compare --client --region --date --kind` record names the reports; without it
    the photo's name does; a link back into the app is shown on screen, never a script address."""
    assert _title(render_assessment(made["assessment"])) == f"SMP assessment: {made['photo'].name}"
    photo = made["photo"]
    out = tmp_path / "assess"
    assert (
        main(
            [
                "assess",
                str(photo),
                "--out",
                str(out),
                "--set",
                "segment.method=classical",
                "--client",
                "C-17",
                "--region",
                "Left temple",
                "--date",
                "2026-03-01",
                "--kind",
                "touch-up",
                "--session",
                "2",
            ]
        )
        == 0
    )
    folder = next(out.iterdir())
    subject = json.loads((folder / "assessment.json").read_text())["subject"]
    assert subject == {
        "client": "C-17",
        "region": "left-temple",
        "date": "2026-03-01",
        "kind": "touch-up",
        "session": 2,
    }
    html = render_assessment(folder, link="/clients/7", link_label="Back to C-17")
    assert _title(html) == "SMP assessment: C-17 / left-temple, 1 Mar 2026, touch-up 2"
    text = _text(html)
    for label, value in (("Client", "C-17"), ("Region", "left-temple"), ("Visit", "1 Mar 2026, touch-up 2")):
        assert re.search(rf"{label}\s+{re.escape(value)}", text), label
    assert '<nav class="back"><a href="/clients/7">&larr; Back to C-17</a></nav>' in html
    assert ".back { display: none; }" in html  # on screen only: not printed
    # given by the caller (the web app, from its records), the subject wins over the folder's
    from pipeline.subject import Subject

    html = render_assessment(
        folder, subject=Subject(client="C-9", region="crown", date=dt.date(2027, 1, 2), kind="follow-up")
    )
    assert _title(html) == "SMP assessment: C-9 / crown, 2 Jan 2027, follow-up"
    assert 'nav class="back"' not in html
    for bad in ("javascript:alert(1)", "//evil.example/x", "data:text/html,x", "/clients/7 onclick=x"):
        with pytest.raises(ReportError, match="link"):
            render_assessment(folder, link=bad)
    assert main(["report", str(folder), "--out", str(tmp_path / "x.html"), "--link", "javascript:alert(1)"]) == 2
    assert "link" in capsys.readouterr().err

    # a comparison: both visits in the title, each photo named by its visit
    cmp = tmp_path / "cmp"
    assert (
        main(
            [
                "compare",
                str(photo),
                str(photo),
                "--out",
                str(cmp),
                "--set",
                "segment.method=classical",
                "--client",
                "C-17",
                "--region",
                "crown",
                "--before-date",
                "2025-01-05",
                "--before-kind",
                "session",
                "--before-session",
                "1",
                "--after-date",
                "2026-01-05",
                "--after-kind",
                "follow-up",
            ]
        )
        == 0
    )
    html = render_comparison(cmp)
    assert _title(html) == "SMP before / after: C-17 / crown, 5 Jan 2025, session 1 \u2192 5 Jan 2026, follow-up"
    assert "5 Jan 2025, session 1 (photos/" in unescape(html)
    assert "date not recorded" not in _text(html)
    capsys.readouterr()


@pytest.mark.parametrize(
    "args, says",
    [
        (["--date", "2026-02-30"], "no such day"),
        (["--kind", "session"], "session number"),
        (["--kind", "checkup"], "unknown kind"),
        (["--session", "2"], "needs its kind"),
        (["--region", "crown/../x"], "bad region"),
    ],
)
def test_bad_subject_options_are_one_line_errors(made, tmp_path, capsys, args, says):
    assert main(["assess", str(made["photo"]), "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("smp assess: error: ") and says in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_a_visit_date_names_one_photo_only(made, tmp_path, capsys):
    p = str(made["photo"])
    assert main(["assess", p, p, "--out", str(tmp_path / "o"), "--date", "2026-01-01"]) == 2
    assert "single photo" in capsys.readouterr().err


def test_cli_several_regions_are_listed(tmp_path, capsys):
    track = tmp_path / "track"
    for region in ("crown", "front"):
        _track_folder(track / region, _track_doc())
    assert main(["report", str(track), "--out", str(tmp_path / "x.html")]) == 2
    assert "several regions (crown, front)" in capsys.readouterr().err


# --------------------------------------------------------------------------- small parts


def test_numbers_for_people():
    assert fmt_int(1204) == "1,204" and fmt_int(None) == "\u2014" and fmt_int(float("nan")) == "\u2014"
    assert fmt_pct(0.42) == "42%" and fmt_pct(0.042) == "4.2%" and fmt_pct(0) == "0%" and fmt_pct(-0.0001) == "0%"
    assert fmt_pct(0.0002) == "<0.1%" and fmt_pct(0.5, 1) == "50.0%"
    assert fmt_points(-0.24) == "\u221224 points" and fmt_points(0.05) == "+5.0 points" and fmt_points(0) == "0 points"
    assert fmt_num(61.24, 1, "per cm\u00b2") == "61.2 per cm\u00b2" and fmt_num(float("inf")) == "\u2014"
    assert fmt_num(-0.04, 1) == "0.0" and fmt_signed(-0.88, 1) == "\u22120.9" and fmt_signed(True) == "\u2014"
    assert fmt_date("2026-03-01") == "1 Mar 2026" and fmt_month("2027-03-14") == "March 2027"
    assert fmt_date("not a date") == "\u2014"


def test_templates_and_css_are_package_data():
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = cfg["tool"]["setuptools"]["package-data"]["pipeline"]
    shipped = {
        p.relative_to(ROOT / "pipeline").as_posix()
        for p in (ROOT / "pipeline" / "report").rglob("*")
        if p.suffix in (".j2", ".css")
    }
    assert {"report/templates/assessment.html.j2", "report/report.css"} <= shipped
    assert all(any(Path(f).match(p) for p in patterns) for f in shipped)
