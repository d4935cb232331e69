"""Settings: read once, frozen, unknown keys and bad values are one-line errors naming the key."""

import pytest
from pydantic import ValidationError

from data.config import ConfigError, Settings, load_settings, parse_overrides
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


@pytest.mark.parametrize(
    "override, key",
    [
        ("skin.nonsense=1", "skin.nonsense"),
        ("hair.follicle_density_per_cm2=[-5, 10]", "hair.follicle_density_per_cm2"),
        ("camera.px_per_mm=[30, 10]", "camera.px_per_mm"),
        ("camera.px_per_mm=[70, 80]", "camera.px_per_mm"),  # close-ups and phone macros reach 60
        ("dots.spacing_mm=[-1, 1]", "dots.spacing_mm"),
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as exc:
        load(override)
    msg = str(exc.value)
    assert key in msg and "\n" not in msg


def test_override_syntax():
    assert parse_overrides(["a.b=3", "c=[1, 2]"]) == {"a": {"b": 3}, "c": [1, 2]}
    with pytest.raises(ConfigError):
        parse_overrides(["novalue"])


@pytest.mark.parametrize(
    "override", ["skin.unknown_key=1", "hair.follicle_density_per_cm2=[-1,3]", "camera.px_per_mm=[1,200]"]
)
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


# Settings with class defaults (the stage functions' ``settings or XSettings()``) and a shipped YAML of
# the same values (what a user reads and edits): the class is the source, the YAML repeats every key with
# the same value, so a stage called directly and a command reading the YAML never run different settings.
# Flags, the generator and training have no class defaults: their YAML is the only place.
_DEFAULTS = [
    ("pipeline.one_photo.assess", "AssessSettings", "assess/default.yaml"),
    ("pipeline.two_photos.settings", "RegisterSettings", "compare/default.yaml"),
    ("pipeline.over_time.fading", "FadingSettings", "fading/default.yaml"),
]


@pytest.mark.parametrize("module,name,yaml_file", _DEFAULTS)
def test_every_shipped_default_equals_its_class_default(module, name, yaml_file):
    import importlib

    import yaml

    from data.config import config_dir, load_settings

    cls = getattr(importlib.import_module(module), name)
    doc = yaml.safe_load((config_dir() / yaml_file).read_text())

    def keys(model_cls, mapping, prefix=""):  # every key of the class is written in the YAML, and no other
        assert set(mapping) == set(model_cls.model_fields), f"{yaml_file}: {prefix or 'top level'}"
        for key, field in model_cls.model_fields.items():
            sub = field.annotation
            if isinstance(sub, type) and issubclass(sub, Settings):
                keys(sub, mapping[key], f"{prefix}{key}.")

    keys(cls, doc)
    assert load_settings(cls, default=yaml_file) == cls()


@pytest.mark.parametrize(
    "module,name,yaml_file",
    [
        ("data.flags", "FlagSettings", "flags.yaml"),
        ("data.synth.settings", "SynthSettings", "synth/closeup.yaml"),
        ("models.train", "TrainSettings", "train/default.yaml"),
    ],
)
def test_settings_without_class_defaults_take_every_value_from_their_yaml(module, name, yaml_file):
    import importlib

    from data.config import load_settings

    cls = getattr(importlib.import_module(module), name)
    with pytest.raises(ValidationError):
        cls()
    assert isinstance(load_settings(cls, default=yaml_file), cls)
