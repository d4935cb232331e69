"""Validated, frozen configuration read once from YAML.

Every configurable part of smp-assess declares its settings as a ``Settings``
subclass (a frozen pydantic model that forbids unknown keys). ``load_settings``
reads a YAML file, applies ``--set key=value`` overrides, validates once and
returns an immutable object; any problem becomes a ``ConfigError`` whose message
is a single line naming the offending key.

This module sits in ``data/`` because ``data`` is the bottom layer of the import
direction (``pipeline -> models -> data``) and every layer reads settings.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

__all__ = [
    "ConfigError",
    "Settings",
    "Range",
    "PositiveRange",
    "NonNegativeRange",
    "UnitRange",
    "config_dir",
    "parse_overrides",
    "load_settings",
    "settings_from_mapping",
]

S = TypeVar("S", bound="Settings")


class ConfigError(ValueError):
    """A configuration problem, described in one line that names the key."""


class Settings(BaseModel):
    """Base class of every settings object: immutable, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


def _check_range(value: tuple[float, float]) -> tuple[float, float]:
    lo, hi = value
    if not (lo <= hi):
        raise ValueError(f"range [{lo}, {hi}] has its lower bound above its upper bound")
    return value


def _check_positive_range(value: tuple[float, float]) -> tuple[float, float]:
    _check_range(value)
    if value[0] <= 0:
        raise ValueError(f"range [{value[0]}, {value[1]}] must be positive")
    return value


def _check_nonneg_range(value: tuple[float, float]) -> tuple[float, float]:
    _check_range(value)
    if value[0] < 0:
        raise ValueError(f"range [{value[0]}, {value[1]}] must not be negative")
    return value


def _check_unit_range(value: tuple[float, float]) -> tuple[float, float]:
    _check_range(value)
    if value[0] < 0 or value[1] > 1:
        raise ValueError(f"range [{value[0]}, {value[1]}] must lie within [0, 1]")
    return value


#: A closed interval ``[lo, hi]`` from which a value is drawn uniformly.
Range = Annotated[tuple[float, float], AfterValidator(_check_range)]
#: A range of strictly positive values.
PositiveRange = Annotated[tuple[float, float], AfterValidator(_check_positive_range)]
#: A range of values >= 0 (densities, noise levels).
NonNegativeRange = Annotated[tuple[float, float], AfterValidator(_check_nonneg_range)]
#: A range inside [0, 1] (fractions, probabilities).
UnitRange = Annotated[tuple[float, float], AfterValidator(_check_unit_range)]


def config_dir() -> Path:
    """The folder holding the project's YAML defaults (``configs/``).

    ``SMP_CONFIG_DIR`` overrides it; otherwise it is the ``configs`` folder of the
    source tree this package comes from (a checkout, or an editable install), else the
    copy an installed package put beside the interpreter (``<prefix>/share/smp-assess/configs``).
    """
    env = os.environ.get("SMP_CONFIG_DIR")
    if env:
        return Path(env)
    source = Path(__file__).resolve().parent.parent / "configs"
    if source.is_dir():
        return source
    return Path(sys.prefix) / "share" / "smp-assess" / "configs"


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Turn ``["a.b=3", "c=[1, 2]"]`` into a nested mapping; values are YAML."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{key}: value {raw!r} is not valid YAML ({exc.__class__.__name__})") from None
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{key}: conflicts with an earlier --set of {part}")
            node = child
        node[parts[-1]] = value
    return out


def _deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys, not {type(content).__name__}")
    return content


def _format_error(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    else:
        msg = err["msg"].removeprefix("Value error, ")
        if "input" in err and not isinstance(err["input"], (dict, list)):
            msg += f" (got {err['input']!r})"
    more = len(exc.errors()) - 1
    tail = f" [+{more} more]" if more else ""
    return f"{source}: {key}: {msg}{tail}" if key else f"{source}: {msg}{tail}"


def settings_from_mapping(cls: type[S], values: Mapping[str, Any], source: str = "config") -> S:
    """Validate a mapping into ``cls``; errors become a one-line ``ConfigError``."""
    try:
        return cls.model_validate(dict(values))
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from None


def load_settings(
    cls: type[S],
    path: str | os.PathLike[str] | None = None,
    overrides: Iterable[str] | Mapping[str, Any] = (),
    *,
    default: str | None = None,
) -> S:
    """Read ``path`` (or ``configs/<default>``), apply overrides, validate once.

    ``overrides`` is either ``key=value`` strings (the CLI's ``--set``) or an
    already nested mapping. Keys of overrides are validated like the file's.
    """
    if path is None:
        if default is None:
            raise ConfigError("no config file given and no default for this command")
        path = config_dir() / default
    path = Path(path)
    values = _read_yaml(path)
    update = dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides)
    values = _deep_merge(values, update)
    return settings_from_mapping(cls, values, source=path.name)
