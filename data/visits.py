"""The words of a client's visits, written once: the kinds of visit, the kinds that put pigment
into the skin, and the two kinds of photo (docs/design.md)."""

from __future__ import annotations

__all__ = ["PIGMENTING_KINDS", "VIEWS", "VISIT_KINDS"]

#: Kinds of visit. ``session`` visits carry their number (1, 2, ...); a ``touch-up`` may;
#: ``baseline`` and ``follow-up`` do not (their number is stored as 0).
VISIT_KINDS: tuple[str, ...] = ("baseline", "session", "follow-up", "touch-up")
#: The visit kinds that put pigment into the skin (and so start or refresh dots).
PIGMENTING_KINDS: tuple[str, ...] = ("session", "touch-up")
#: Photo views: a close-up of a region (8-40 px/mm) or a whole head (1-6 px/mm).
VIEWS: tuple[str, ...] = ("closeup", "global")
