"""An installed smp finds its YAML defaults without a source checkout (configs shipped with the package)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_the_wheel_ships_every_config_and_an_install_finds_them(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "wheel"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "wheel").glob("smp_assess-*.whl")
    shipped = {
        n.split("share/smp-assess/", 1)[1]
        for n in zipfile.ZipFile(wheel).namelist()
        if "share/smp-assess/configs/" in n
    }
    expected = {p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").rglob("*.yaml")}
    assert shipped == expected
    # a fresh environment that sees this one's dependencies, the package installed (not editable)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
    )
    probe = (
        "import data.config as c, pathlib; d = c.config_dir(); "
        "print(d, pathlib.Path(c.__file__).parent, (d / 'assess' / 'default.yaml').is_file())"
    )
    out = subprocess.run(
        [str(python), "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout.split()
    assert out[0] == str(venv / "share" / "smp-assess" / "configs") and out[2] == "True", out
    assert str(venv) in out[1], "the installed copy was imported, not the checkout"
