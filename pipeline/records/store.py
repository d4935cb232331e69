"""The content-addressed photo store: every photo file once, named by its sha256.

Layout: ``<root>/photos/ab/cd/<sha256><ext>`` (``ab``, ``cd``: the first two
pairs of hex digits, so that no folder grows huge). The database keeps the path
relative to the root, so the store can be moved.

A file is written to a temporary name in its final folder and then hard-linked
to its final name: the link fails if the name exists, so a file is never seen
half-written, two writers of the same photo never make two copies, and exactly
one of them knows it created the file (:attr:`StoredFile.created`) - which is
what lets a failed ingest remove only the files it added. The bytes are hashed
as they are read, and a file whose content does not match the expected sha256
is refused.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UserError

__all__ = ["PhotoStore", "StoreError", "StoredFile", "stored_name"]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_EXT = re.compile(r"\.[a-z0-9]{1,8}")
#: Spellings of one format, so that ``a.JPEG`` and ``a.jpg`` are stored alike.
_SAME_EXT = {".jpeg": ".jpg", ".jpe": ".jpg", ".tif": ".tiff"}
_TMP_SUFFIX = ".tmp"


class StoreError(UserError):
    """A file that cannot be stored: unreadable, or not the content it was validated with."""


@dataclass(frozen=True)
class StoredFile:
    """Where a photo is in the store (``relpath``, relative to the root) and whether this call wrote it."""

    relpath: str
    created: bool


def stored_name(sha256: str, original_name: str) -> str:
    """The store path of a photo relative to the root: ``photos/ab/cd/<sha256><ext>``.

    The extension is the original file's, lower-cased and unified (``.jpeg`` ->
    ``.jpg``); dropped if it is not a plain short extension.
    """
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    ext = Path(original_name).suffix.lower()
    ext = _SAME_EXT.get(ext, ext) if _EXT.fullmatch(ext) else ""
    return f"photos/{sha256[:2]}/{sha256[2:4]}/{sha256}{ext}"


@dataclass(frozen=True)
class PhotoStore:
    """A photo store rooted at ``root`` (created on first write)."""

    root: Path

    def path(self, relpath: str) -> Path:
        return self.root / relpath

    def find(self, sha256: str) -> Path | None:
        """The stored file of ``sha256`` whatever its extension, or None."""
        folder = self.root / "photos" / sha256[:2] / sha256[2:4]
        hits = [p for p in folder.glob(f"{sha256}*") if not p.name.endswith(_TMP_SUFFIX)] if folder.is_dir() else []
        return min(hits) if hits else None

    def put(self, source: Path, sha256: str) -> StoredFile:
        """Store the file at ``source``, whose content must hash to ``sha256``.

        Already stored (under any extension): nothing is written unless the stored
        copy is damaged, in which case it is repaired. Returns where it is and
        whether this call created it.
        """
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise StoreError(f"{source}: cannot read ({exc.strerror or exc})") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise StoreError(
                f"{source}: the file changed while it was being added "
                f"(sha256 {actual[:12]}..., expected {sha256[:12]}...)"
            )
        existing = self.find(sha256)
        if existing is not None:
            if _sha256_of(existing) != sha256:
                self._write(existing, data, replace=True)
            return StoredFile(existing.relative_to(self.root).as_posix(), created=False)
        relpath = stored_name(sha256, Path(source).name)
        return StoredFile(relpath, created=self._write(self.root / relpath, data, replace=False))

    def remove(self, relpath: str) -> None:
        """Delete a stored file (and its folders once empty); missing is fine."""
        path = self.root / relpath
        path.unlink(missing_ok=True)
        for folder in (path.parent, path.parent.parent):
            try:
                folder.rmdir()
            except OSError:
                break

    def sweep(self, referenced: set[str], *, min_age_s: float = 3600.0) -> tuple[str, ...]:
        """Delete files no record points to (``referenced``: relpaths that are) and stale
        temporary files, older than ``min_age_s`` (younger ones may belong to an ingest
        still running). Returns the relpaths removed.

        Only needed after a process was killed mid-ingest; a failed ingest cleans up itself.
        """
        cutoff = time.time() - min_age_s
        removed = []
        for path in (self.root / "photos").glob("*/*/*"):
            rel = path.relative_to(self.root).as_posix()
            if rel not in referenced and path.stat().st_mtime < cutoff:
                self.remove(rel)
                removed.append(rel)
        return tuple(sorted(removed))

    @staticmethod
    def _write(dest: Path, data: bytes, *, replace: bool) -> bool:
        """Write ``data`` to ``dest`` through a temporary file; False if ``dest`` appeared meanwhile."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}{_TMP_SUFFIX}")
        try:
            with open(tmp, "xb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            if replace:
                os.replace(tmp, dest)
                return True
            try:
                os.link(tmp, dest)
            except FileExistsError:
                return False
            except OSError as exc:  # a file system without hard links: rename (same bytes either way)
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                    raise
                if dest.exists():
                    return False
                os.replace(tmp, dest)
            return True
        finally:
            tmp.unlink(missing_ok=True)


def _sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
