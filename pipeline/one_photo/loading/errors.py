"""The one error of loading, :class:`PhotoError` (and :class:`PhotoTooLarge`, the
decompression-bomb guard's), and keeping the messages it carries on one line."""

from __future__ import annotations

import re

from pipeline.errors import UserError


class PhotoError(UserError):
    """A photo that cannot be used. ``str(err)`` is ``"<name>: <reason>"``, one line."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"{_one_line(name)}: {_one_line(reason)}")

    def __reduce__(self) -> tuple[type[PhotoError], tuple[str, str]]:
        # Exceptions pickle as cls(*args); ours takes (name, reason), not the
        # message, so say so explicitly (batch workers send errors back pickled).
        return (type(self), (self.name, self.reason))


class PhotoTooLarge(PhotoError):
    """A photo refused for its pixel count (the decompression-bomb guard); ``pixels`` when known."""

    def __init__(self, name: str, reason: str, pixels: int | None = None) -> None:
        super().__init__(name, reason)
        self.pixels = pixels

    def __reduce__(self) -> tuple[type[PhotoError], tuple[str, str, int | None]]:  # type: ignore[override]
        return (type(self), (self.name, self.reason, self.pixels))


def _one_line(text: str) -> str:
    """Escape control characters (newlines included) so a message stays on one line."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", str(text))


def _brief(text: str, limit: int = 120) -> str:
    """A decoder's or library's message, whitespace collapsed, cut to ``limit``."""
    text = _one_line(" ".join(str(text).split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."
