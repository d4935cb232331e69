"""Who is asking: passwords, browser sessions, CSRF tokens, API tokens, login throttling.

* Passwords are hashed with scrypt (``hashlib.scrypt``, memory-hard: n=2**14, r=8,
  p=1, 16 MiB per guess) and a 16-byte random salt, stored as the self-describing
  ``scrypt$n$r$p$salt$hash`` so the cost can be raised later; compared in constant time.
* Browser sessions are server-side: the cookie carries a random token, the database
  only its sha256 (a stolen database does not log anyone in), with an absolute
  expiry. Logging out deletes the row; a deactivated user is out at once.
* CSRF: every state-changing request made with the session cookie must carry
  ``HMAC(secret, session token)`` in the ``csrf_token`` form field or the
  ``X-CSRF-Token`` header. The login form has its own token tied to a pre-login cookie.
  Bearer-token requests need none (a browser never sends them on its own).
* API tokens (``smp_...``, 256 random bits) are shown once; only their sha256 is kept
  (a slow KDF adds nothing to a random 256-bit secret), looked up by that hash.
* Failed logins are throttled per username and client address
  (:class:`pipeline.web.settings.ThrottleSettings`): an exponential wait, then a lockout.
  A throttled attempt is refused without checking the password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from pipeline.records.schema import ROLES, ApiToken, Clinic, LoginThrottle, User, WebSession, is_slug
from pipeline.web.settings import ThrottleSettings

__all__ = [
    "AuthError",
    "Principal",
    "check_password_strength",
    "create_user",
    "csrf_matches",
    "csrf_token",
    "hash_password",
    "issue_token",
    "login_csrf_token",
    "normalise_username",
    "open_session",
    "close_session",
    "revoke_token",
    "session_principal",
    "set_password",
    "throttle_attempt",
    "throttle_failure",
    "throttle_success",
    "throttle_wait",
    "account_key",
    "token_principal",
    "touch_token",
    "verify_password",
    "authenticate_password",
]

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_SALT_BYTES = 16
_HASH_BYTES = 32
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,99}")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
TOKEN_PREFIX = "smp_"
#: last_used_at of an API token is written at most this often (a write per request would
#: queue every API call behind the database's write lock).
_TOKEN_TOUCH_S = 60


class AuthError(ValueError):
    """A user, password or token that cannot be created as asked (one line, shown as is)."""


@dataclass(frozen=True)
class Principal:
    """An authenticated user as the request handlers see it.

    ``via``: ``session`` (browser cookie: CSRF applies) or ``token`` (API bearer token).
    """

    user_id: int
    username: str
    role: str
    clinic_id: int
    clinic_slug: str
    via: str
    session_token: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def sees_clinic(self, clinic_id: int) -> bool:
        return self.is_admin or clinic_id == self.clinic_id


# --------------------------------------------------------------------------- passwords


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$<salt b64>$<hash b64>`` of ``password`` with a new random salt."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=_HASH_BYTES, maxmem=64 * 2**20
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (constant-time comparison; False for any malformed hash)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest, validate=True)
        got = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt, validate=True),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=256 * 2**20,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


#: Verified against when the username is unknown, so that the answer takes as long
#: as for a known user (no user enumeration by timing). Made on first use.
_DUMMY_HASH: list[str] = []


def _dummy_hash() -> str:
    if not _DUMMY_HASH:
        _DUMMY_HASH.append(hash_password(secrets.token_urlsafe(16)))
    return _DUMMY_HASH[0]


#: A password needs at least this many different characters ("aaaaaaaaaa" and "abababab12" are refused).
MIN_DISTINCT = 5


#: Sequences a password must not be a piece of (forwards or backwards): digits round the clock, the
#: alphabet, the keyboard's rows.
_RUNS = ("01234567890123456789", "abcdefghijklmnopqrstuvwxyz", "qwertyuiopasdfghjklzxcvbnm")


def _is_run(text: str) -> bool:
    """One character repeated, or a straight run ("aaaa", "1234567890", "zyxwv", "qwertyuiop")."""
    if len(set(text)) <= 1:
        return True
    return any(text in run or text in run[::-1] for run in _RUNS)


def check_password_strength(password: str, username: str = "") -> None:
    """The password policy of every role: long enough (and not too long), not one character or a straight
    run, at least :data:`MIN_DISTINCT` different characters, and not containing the user name."""
    if len(password) < MIN_PASSWORD:
        raise AuthError(f"password too short: use at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AuthError(f"password too long: at most {MAX_PASSWORD} characters")
    folded = password.strip().lower()
    if _is_run(folded):
        raise AuthError("password is one character repeated or a straight run (like 1234567890): choose another")
    if len(set(folded)) < MIN_DISTINCT:
        raise AuthError(f"password has too few different characters: use at least {MIN_DISTINCT}")
    name = username.strip().lower()
    if name and (folded == name or (len(name) >= 3 and name in folded)):
        raise AuthError("password must not contain the user name")


def normalise_username(text: str) -> str:
    name = text.strip().lower()
    if not _USERNAME.fullmatch(name):
        raise AuthError(f"bad username {text!r}: 1-100 lower-case letters, digits, '.', '_', '@', '-'")
    return name


# --------------------------------------------------------------------------- users and tokens


def create_user(
    session: Session, username: str, *, clinic: str, role: str, password: str, create_clinic: bool = True
) -> int:
    """Add a user of ``clinic`` (a slug; created if missing and ``create_clinic``); returns its id."""
    name = normalise_username(username)
    if role not in ROLES:
        raise AuthError(f"unknown role {role!r}: use {', '.join(ROLES)}")
    check_password_strength(password, name)
    slug = clinic.strip().lower()
    if not is_slug(slug) or len(slug) > 64:
        raise AuthError(f"bad clinic {clinic!r}: use lower-case letters, digits and hyphens")
    clinic_id = session.scalar(sa.select(Clinic.id).where(Clinic.slug == slug))
    if clinic_id is None:
        if not create_clinic:
            raise AuthError(f"unknown clinic {slug!r}")
        row = Clinic(slug=slug, name=slug)
        session.add(row)
        session.flush()
        clinic_id = row.id
    if session.scalar(sa.select(User.id).where(User.username == name)) is not None:
        raise AuthError(f"user {name!r} exists already")
    user = User(clinic_id=clinic_id, username=name, password_hash=hash_password(password), role=role, active=True)
    session.add(user)
    session.flush()
    return user.id


def set_password(session: Session, username: str, password: str) -> None:
    """Give ``username`` a new password and end their browser sessions (API tokens are kept)."""
    name = normalise_username(username)
    check_password_strength(password, name)
    user = session.scalar(sa.select(User).where(User.username == name))
    if user is None:
        raise AuthError(f"no user {name!r}")
    user.password_hash = hash_password(password)
    session.execute(sa.delete(WebSession).where(WebSession.user_id == user.id))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_token(session: Session, user_id: int, name: str) -> tuple[int, str]:
    """A new API token for ``user_id``: ``(token id, token)``. The token is shown once, never stored."""
    name = name.strip()
    if not name or len(name) > 100:
        raise AuthError("a token needs a name of 1 to 100 characters")
    if session.get(User, user_id) is None:
        raise AuthError(f"no user {user_id}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user_id, name=name, token_hash=_digest(token), prefix=token[:10])
    session.add(row)
    session.flush()
    return row.id, token


def revoke_token(session: Session, token_id: int, now: datetime) -> bool:
    """Revoke a token (idempotent); False if there is no such token."""
    row = session.get(ApiToken, token_id)
    if row is None:
        return False
    if row.revoked_at is None:
        row.revoked_at = now
    return True


def _principal(user: User, clinic_slug: str, via: str, session_token: str | None = None) -> Principal:
    return Principal(
        user_id=user.id,
        username=user.username,
        role=user.role,
        clinic_id=user.clinic_id,
        clinic_slug=clinic_slug,
        via=via,
        session_token=session_token,
    )


def token_principal(session: Session, token: str, now: datetime) -> tuple[Principal | None, int | None]:
    """The user of a bearer token, if the token is known, not revoked, and its user active; and the
    token's id when its ``last_used_at`` is due to be written (at most once a minute: see :func:`touch_token`)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None, None
    digest = _digest(token)
    row = session.execute(
        sa.select(ApiToken, User, Clinic.slug)
        .join(User, User.id == ApiToken.user_id)
        .join(Clinic, Clinic.id == User.clinic_id)
        .where(ApiToken.token_hash == digest)
    ).first()
    if row is None:
        return None, None
    tok, user, slug = row
    if not hmac.compare_digest(tok.token_hash, digest) or tok.revoked_at is not None or not user.active:
        return None, None
    stale = tok.last_used_at is None or (now - tok.last_used_at).total_seconds() > _TOKEN_TOUCH_S
    return _principal(user, slug, "token"), tok.id if stale else None


def touch_token(session: Session, token_id: int, now: datetime) -> None:
    session.execute(sa.update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now))


# --------------------------------------------------------------------------- browser sessions and CSRF


def open_session(session: Session, user_id: int, now: datetime, lifetime_s: int) -> str:
    """A new browser session for ``user_id``; returns the cookie's token. Expired sessions are purged."""
    session.execute(sa.delete(WebSession).where(WebSession.expires_at <= now))
    token = secrets.token_urlsafe(32)
    session.add(
        WebSession(
            token_hash=_digest(token), user_id=user_id, created_at=now, expires_at=now + timedelta(seconds=lifetime_s)
        )
    )
    session.flush()
    return token


def close_session(session: Session, token: str) -> None:
    session.execute(sa.delete(WebSession).where(WebSession.token_hash == _digest(token)))


def session_principal(session: Session, token: str, now: datetime) -> Principal | None:
    """The user of a session cookie, if the session exists, has not expired and its user is active."""
    if not token or len(token) > 200:
        return None
    row = session.execute(
        sa.select(WebSession, User, Clinic.slug)
        .join(User, User.id == WebSession.user_id)
        .join(Clinic, Clinic.id == User.clinic_id)
        .where(WebSession.token_hash == _digest(token))
    ).first()
    if row is None:
        return None
    ws, user, slug = row
    if ws.expires_at <= now or not user.active:
        return None
    return _principal(user, slug, "session", token)


def _hmac(secret: bytes, purpose: str, value: str) -> str:
    return hmac.new(secret, f"{purpose}|{value}".encode(), hashlib.sha256).hexdigest()


def csrf_token(secret: bytes, session_token: str) -> str:
    """The CSRF token of a browser session."""
    return _hmac(secret, "csrf", session_token)


def login_csrf_token(secret: bytes, prelogin_cookie: str) -> str:
    """The CSRF token of the login form, tied to the pre-login cookie."""
    return _hmac(secret, "login", prelogin_cookie)


def csrf_matches(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), str(given).encode())


def authenticate_password(session: Session, username: str, password: str) -> User | None:
    """The active user with this username and password, else None (taking as long either way)."""
    try:
        name = normalise_username(username)
    except AuthError:
        verify_password(password, _dummy_hash())
        return None
    user = session.scalar(sa.select(User).where(User.username == name))
    if user is None:
        verify_password(password, _dummy_hash())
        return None
    ok = verify_password(password[:MAX_PASSWORD], user.password_hash)
    return user if ok and user.active else None


# --------------------------------------------------------------------------- login throttling

ACCOUNT_PREFIX = "account|"


def throttle_key(username: str, address: str) -> str:
    return f"{username.strip().lower()[:200]}|{address[:100]}"


def account_key(username: str) -> str:
    """The key of an account's failures from every address."""
    return f"{ACCOUNT_PREFIX}{username.strip().lower()[:200]}"


def _limits(key: str, cfg: ThrottleSettings) -> tuple[int, int]:
    """(free failures, lockout failures) of ``key``."""
    if key.startswith(ACCOUNT_PREFIX):
        return cfg.account_free_failures, cfg.account_lockout_failures
    return cfg.free_failures, cfg.lockout_failures


def _row_wait(row: LoginThrottle | None, now: datetime, cfg: ThrottleSettings) -> float:
    if row is None:
        return 0.0
    if row.locked_until is not None and row.locked_until > now:
        return (row.locked_until - now).total_seconds()
    if (now - row.last_failure_at).total_seconds() >= cfg.forget_after_s:
        return 0.0
    free, _ = _limits(row.key, cfg)
    if row.failures < free:
        return 0.0
    delay = min(cfg.max_delay_s, cfg.base_delay_s * 2 ** (row.failures - free))
    ready = row.last_failure_at + timedelta(seconds=delay)
    return max(0.0, (ready - now).total_seconds())


def _rows(session: Session, keys: list[str], *, lock: bool) -> dict[str, LoginThrottle]:
    stmt = sa.select(LoginThrottle).where(LoginThrottle.key.in_(keys))
    if lock:  # PostgreSQL: the rows stay locked until the transaction ends (SQLite: BEGIN IMMEDIATE already)
        stmt = stmt.with_for_update()
    return {r.key: r for r in session.scalars(stmt)}


def throttle_wait(session: Session, key: str, now: datetime, cfg: ThrottleSettings) -> float:
    """Seconds before ``key`` may try to log in again (0: now)."""
    return _row_wait(_rows(session, [key], lock=False).get(key), now, cfg)


def _count(session: Session, key: str, row: LoginThrottle | None, now: datetime, cfg: ThrottleSettings) -> int:
    if row is None:
        row = LoginThrottle(key=key, failures=0, last_failure_at=now)
        session.add(row)
    elif (now - row.last_failure_at).total_seconds() >= cfg.forget_after_s:
        row.failures, row.locked_until = 0, None
    row.failures += 1
    row.last_failure_at = now
    if row.failures >= _limits(key, cfg)[1]:
        row.locked_until = now + timedelta(seconds=cfg.lockout_s)
    return row.failures


def throttle_attempt(session: Session, username: str, address: str, now: datetime, cfg: ThrottleSettings) -> float:
    """Admit one login attempt, or say how long to wait. Call in a write transaction, before the password
    is checked: an admitted attempt is already counted as a failure of its keys (the username from this
    address, and the account from every address when it exists), so concurrent attempts cannot all pass one
    reading of the counts; :func:`throttle_success` clears the keys when the password was right.
    Rows quiet for ``forget_after_s`` (and not locked) are deleted on the way."""
    forget = now - timedelta(seconds=cfg.forget_after_s)
    session.execute(
        sa.delete(LoginThrottle).where(
            LoginThrottle.last_failure_at < forget,
            sa.or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until < now),
        )
    )
    keys = [throttle_key(username, address)]
    try:
        name = normalise_username(username)
    except AuthError:
        name = None
    if name is not None and session.scalar(sa.select(User.id).where(User.username == name)) is not None:
        keys.append(account_key(name))
    rows = _rows(session, keys, lock=True)
    wait = max(_row_wait(rows.get(k), now, cfg) for k in keys)
    if wait > 0:
        return wait
    for k in keys:
        _count(session, k, rows.get(k), now, cfg)
    session.flush()
    return 0.0


def throttle_failure(session: Session, key: str, now: datetime, cfg: ThrottleSettings) -> int:
    """Count a failed login of ``key``; returns its failures so far. Locks it at its lockout count."""
    row = _rows(session, [key], lock=True).get(key)
    failures = _count(session, key, row, now, cfg)
    session.flush()
    return failures


def throttle_success(session: Session, *keys: str) -> None:
    session.execute(sa.delete(LoginThrottle).where(LoginThrottle.key.in_(keys)))
