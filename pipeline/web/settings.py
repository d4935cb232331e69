"""What the web app is told at start: where the data is, limits, lifetimes, throttling.

Everything has a safe default; :class:`WebSettings` is frozen and read once by
:func:`pipeline.web.app.create_app`. The secret key (it signs CSRF tokens) is never a
constant in code: unless given, it is generated on first start and kept in
``<home>/web-secret.key`` (mode 0600), so restarts keep users logged in.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.records import data_home
from pipeline.records.db import DATABASE_URL_ENV

__all__ = ["ThrottleSettings", "WebSettings", "load_or_create_secret"]

SECRET_FILE = "web-secret.key"
_SECRET_BYTES = 32


@dataclass(frozen=True)
class ThrottleSettings:
    """Failed logins per username and client address, and per account from any address.

    The first ``free_failures`` cost nothing; after that each attempt must wait
    ``base_delay_s * 2 ** (failures - free_failures)`` (at most ``max_delay_s``) after
    the last failure; ``lockout_failures`` failures lock the key for ``lockout_s``
    (another failure after that locks it again). An existing account counts every
    address's failures too, under ``account_free_failures`` and
    ``account_lockout_failures`` (larger: a user is not locked out by one attacker's
    address alone, but a spread attack still meets a limit). A success clears the keys;
    a key quiet for ``forget_after_s`` starts again from zero and its row is deleted.
    An attempt is counted before its password is checked, in the transaction that read
    the count, so concurrent attempts never check more passwords than the limits allow.
    """

    free_failures: int = 3
    base_delay_s: float = 1.0
    max_delay_s: float = 120.0
    lockout_failures: int = 10
    lockout_s: float = 900.0
    forget_after_s: float = 86_400.0
    account_free_failures: int = 10
    account_lockout_failures: int = 30

    def __post_init__(self) -> None:
        if not 0 <= self.free_failures < self.lockout_failures:
            raise ValueError("throttle: free_failures must be below lockout_failures")
        if not 0 <= self.account_free_failures < self.account_lockout_failures:
            raise ValueError("throttle: account_free_failures must be below account_lockout_failures")
        if min(self.base_delay_s, self.max_delay_s, self.lockout_s, self.forget_after_s) <= 0:
            raise ValueError("throttle: delays, the lockout and forget_after_s must be positive")


@dataclass(frozen=True)
class WebSettings:
    """``home``: the data home (photo store, assessment folders, exports, the secret key);
    ``db_url``: records database (default ``$SMP_DATABASE_URL``, else ``<home>/records.db``);
    ``store``: photo store root (default ``home``).

    ``assessor_factory``: builds the assessor the background worker uses (default: the
    pipeline's :class:`pipeline.one_photo.assess.Assessor` with ``assess_config`` and
    ``assess_overrides``); see :class:`pipeline.web.jobs.WebAssessor`. ``clock``: seconds
    since the epoch (tests inject one). ``start_worker``: run the background worker thread
    (tests drain the queue themselves).

    What one upload and one assessment may cost the server that every clinic shares
    (docs/design.md, "The clinic server's limits"): a photo is refused from its header,
    before any pixel is decoded, above ``max_pixels`` (the web cap, about half the
    command line's 100 megapixels), when its shorter side is under ``min_photo_side`` or
    its longer side over ``max_aspect_ratio`` times the shorter; at most
    ``max_concurrent_decodes`` photos are decoded at once across the server (an upload
    waits up to ``decode_wait_s`` for its turn, then is told to try again); each
    assessment runs in a child process stopped after ``job_time_limit_s`` or when it
    needs more than ``job_memory_limit_mb`` beyond what the server had mapped.
    """

    home: Path = field(default_factory=data_home)
    db_url: str | None = None
    store: Path | None = None
    secret_key: bytes | None = None
    max_upload_bytes: int = 40 * 2**20
    max_files_per_upload: int = 20
    max_pixels: int = 48_000_000
    min_photo_side: int = 256
    max_aspect_ratio: float = 4.0
    max_concurrent_decodes: int = 1
    decode_wait_s: float = 120.0
    job_time_limit_s: float = 900.0
    job_memory_limit_mb: int = 6144
    #: Bodies of requests that are not uploads (forms, JSON).
    max_form_bytes: int = 256 * 2**10
    session_lifetime_s: int = 12 * 3600
    #: A label export is deleted once downloaded; one whose download never finished is deleted after this.
    export_retention_s: float = 3600.0
    secure_cookies: bool = False
    throttle: ThrottleSettings = ThrottleSettings()
    assess_config: Path | None = None
    assess_overrides: tuple[str, ...] = ()
    assessor_factory: Callable[[], Any] | None = None
    start_worker: bool = True
    #: Seconds between looks at the job table when nothing woke the worker (other processes' jobs).
    worker_poll_s: float = 2.0
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        if min(self.max_upload_bytes, self.max_files_per_upload, self.max_form_bytes) < 1:
            raise ValueError("web settings: upload and form limits must be at least 1")
        if self.min_photo_side < 1 or self.max_pixels < self.min_photo_side**2:
            raise ValueError("web settings: min_photo_side must be at least 1 and max_pixels at least its square")
        if self.max_aspect_ratio < 1:
            raise ValueError("web settings: max_aspect_ratio must be at least 1 (a square photo)")
        if self.max_concurrent_decodes < 1 or self.decode_wait_s <= 0:
            raise ValueError("web settings: max_concurrent_decodes must be at least 1 and decode_wait_s positive")
        if self.job_time_limit_s <= 0 or self.job_memory_limit_mb < 64:
            raise ValueError("web settings: job_time_limit_s must be positive and job_memory_limit_mb at least 64")

    def database_url(self) -> str:
        return self.db_url or os.environ.get(DATABASE_URL_ENV) or f"sqlite:///{Path(self.home) / 'records.db'}"

    def store_root(self) -> Path:
        return Path(self.store) if self.store is not None else Path(self.home)


def load_or_create_secret(home: Path) -> bytes:
    """The app's secret key from ``home/web-secret.key``, created (0600, random) if missing.

    Two processes starting at once agree: the file is created exclusively and the
    loser reads the winner's key.
    """
    path = Path(home) / SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(50):
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            text = ""
        if text:
            try:
                key = bytes.fromhex(text)
            except ValueError:
                raise ValueError(f"{path}: not a hex secret key; delete it to make a new one") from None
            if len(key) < _SECRET_BYTES:
                raise ValueError(f"{path}: secret key shorter than {_SECRET_BYTES} bytes; delete it to make a new one")
            return key
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            time.sleep(0.05)  # another process is writing it
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(_SECRET_BYTES) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    raise RuntimeError(f"{path}: could not read or create the secret key")
