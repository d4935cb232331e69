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

from ..records import data_home
from ..records.db import DATABASE_URL_ENV

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
    pipeline's :class:`pipeline.assess.Assessor` with ``assess_config`` and
    ``assess_overrides``); see :class:`pipeline.web.jobs.WebAssessor`. ``clock``: seconds
    since the epoch (tests inject one). ``start_worker``: run the background worker thread
    (tests drain the queue themselves).
    """

    home: Path = field(default_factory=data_home)
    db_url: str | None = None
    store: Path | None = None
    secret_key: bytes | None = None
    max_upload_bytes: int = 40 * 2**20
    max_files_per_upload: int = 20
    max_pixels: int = 100_000_000
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
