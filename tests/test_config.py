"""Settings: read once, frozen, unknown keys and bad values are one-line errors naming the key."""
import pytest
from pydantic import ValidationError

from data.config import ConfigError, load_settings, parse_overrides
from data.synth.settings import SynthSettings
from pipeline.cli import main


def load(*overrides):
    return load_settings(SynthSettings, None, list(overrides), default="synth/closeup.yaml")


def test_defaults_load_and_are_frozen():
    cfg = load()
    assert cfg.view == "closeup"
    with pytest.raises(ValidationError, match="frozen"):
        cfg.view = "global"


def test_override_applies():
    assert load("image.width=640").image.width == 640


@pytest.mark.parametrize("override, key", [
    ("skin.nonsense=1", "skin.nonsense"),
    ("hair.follicle_density_per_cm2=[-5, 10]", "hair.follicle_density_per_cm2"),
    ("camera.px_per_mm=[30, 10]", "camera.px_per_mm"),
    ("camera.px_per_mm=[70, 80]", "camera.px_per_mm"),       # close-ups and phone macros reach 60
    ("dots.spacing_mm=[-1, 1]", "dots.spacing_mm"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as exc:
        load(override)
    msg = str(exc.value)
    assert key in msg and "\n" not in msg


def test_override_syntax():
    assert parse_overrides(["a.b=3", "c=[1, 2]"]) == {"a": {"b": 3}, "c": [1, 2]}
    with pytest.raises(ConfigError):
        parse_overrides(["novalue"])


@pytest.mark.parametrize("override", ["skin.unknown_key=1", "hair.follicle_density_per_cm2=[-1,3]",
                                      "camera.px_per_mm=[1,200]"])
def test_cli_bad_config_exits_nonzero_with_one_line(override, tmp_path, capsys):
    rc = main(["synth", "--out", str(tmp_path / "o"), "--n", "1", "--set", override])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and "error" in err
    assert override.split("=")[0] in err


def test_cli_missing_config_file(tmp_path, capsys):
    rc = main(["synth", "--out", str(tmp_path), "--config", str(tmp_path / "nope.yaml")])
    assert rc == 2 and "not found" in capsys.readouterr().err


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "synth" in out and "card" in out
