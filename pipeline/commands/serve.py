"""``smp serve`` (the web app) and ``smp users`` (its users and API tokens)."""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import sys
from datetime import UTC
from pathlib import Path
from typing import Any

from pipeline.commands import DB_HELP as _DB_HELP
from pipeline.errors import UserError

_STORE_HELP = "data home: photo store, assessment folders, exports, the secret key (default: $SMP_HOME or ./smp-data)"


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="run the web app: clinics' pages, the review queue and the JSON API",
        description=(
            "Run the web app on the records and photo store the other commands use. Users log in "
            "(create them with 'smp users add'); clinic staff upload photos and read reports, reviewers "
            "judge flagged dots and export their labels, clinic systems use the JSON API with a token "
            "('smp users token'); API reference at /api/docs. Photos are assessed in the background "
            "one photo at a time, each in a child process with a time and a memory limit (the model is loaded "
            "once), clinics taking turns. Behind a TLS proxy, pass --secure-cookies, and --forwarded-allow-ips "
            "with the proxy's address so that the login throttle sees each user's own address."
        ),
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--db", default=None, metavar="URL", help=_DB_HELP)
    serve.add_argument("--store", type=Path, default=None, metavar="DIR", help=_STORE_HELP)
    serve.add_argument(
        "--max-upload-mb", type=int, default=40, metavar="MB", help="largest photo accepted (default 40)"
    )
    serve.add_argument("--secure-cookies", action="store_true", help="mark cookies Secure (serve over HTTPS)")
    serve.add_argument(
        "--forwarded-allow-ips",
        default=None,
        metavar="ADDRS",
        help="comma-separated addresses or networks of the reverse proxies whose X-Forwarded-For "
        "and X-Forwarded-Proto headers are believed (default: none; the headers are ignored, "
        "and every request's address is the connection's)",
    )
    serve.add_argument(
        "--assess-config",
        type=Path,
        default=None,
        metavar="YAML",
        help="assessment settings (default configs/assess/default.yaml)",
    )
    serve.add_argument(
        "--assess-set",
        dest="assess_overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one assessment setting, e.g. --assess-set segment.method=classical",
    )
    # a server must not keep each upload's peak memory for reuse (pipeline.runtime)
    serve.set_defaults(func=run_serve, keep_freed_memory=False)

    users = subparsers.add_parser(
        "users",
        help="manage the web app's users and API tokens",
        description="Add users of the web app (staff, reviewer or admin of a clinic) and issue or revoke API tokens.",
    )
    actions = users.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser(
        "add",
        help="add a user",
        description=(
            "Add a user of CLINIC (created if new) with ROLE: staff (the clinic's clients, uploads, reports), "
            "reviewer (the clinic's review queue and label export), admin (every clinic, user management). "
            "The password is asked for twice, or read from the first line of standard input with --password-stdin."
        ),
    )
    add.add_argument("username", metavar="USERNAME")
    add.add_argument("--clinic", required=True, metavar="C", help="the user's clinic (a slug, e.g. north-clinic)")
    add.add_argument("--role", required=True, choices=("staff", "reviewer", "admin"))
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.add_argument("--db", default=None, metavar="URL", help=_DB_HELP)
    add.set_defaults(func=run_users_add)

    passwd = actions.add_parser(
        "passwd",
        help="set a user's password (ends their browser sessions)",
        description=(
            "Set a new password for USERNAME, asked for twice or read from standard input with --password-stdin. "
            "The user's browser sessions end; their API tokens stay valid."
        ),
    )
    passwd.add_argument("username", metavar="USERNAME")
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    passwd.add_argument("--db", default=None, metavar="URL", help=_DB_HELP)
    passwd.set_defaults(func=run_users_passwd)

    token = actions.add_parser(
        "token",
        help="issue an API token for a user (printed once)",
        description=(
            "Issue a new API token for USERNAME and print it once (only its hash is kept). Clinic systems send it "
            "as 'Authorization: Bearer <token>'; it acts as that user, in that user's clinic."
        ),
    )
    token.add_argument("username", metavar="USERNAME")
    token.add_argument("--name", required=True, metavar="N", help="what the token is for (e.g. 'crm-sync')")
    token.add_argument("--db", default=None, metavar="URL", help=_DB_HELP)
    token.set_defaults(func=run_users_token)

    revoke = actions.add_parser("revoke", help="revoke an API token by its id", description="Revoke an API token.")
    revoke.add_argument("token_id", type=int, metavar="TOKEN_ID", help="the id shown by 'smp users list'")
    revoke.add_argument("--db", default=None, metavar="URL", help=_DB_HELP)
    revoke.set_defaults(func=run_users_revoke)

    listing = actions.add_parser("list", help="list users and their tokens", description="List users and tokens.")
    listing.add_argument("--db", default=None, metavar="URL", help=_DB_HELP)
    listing.set_defaults(func=run_users_list)


def forwarded_allow_ips(text: str | None) -> str | None:
    """The proxies to believe, normalised (``10.0.0.5,10.1.0.0/16``), or None for none.

    Each entry must be an IP address or network; ``*`` (any sender) is refused: it would let
    every client choose the address the login throttle counts against.
    """
    if text is None or not text.strip():
        return None
    entries = []
    for part in text.split(","):
        entry = part.strip()
        try:
            entries.append(
                str(ipaddress.ip_network(entry, strict=False)) if "/" in entry else str(ipaddress.ip_address(entry))
            )
        except ValueError:
            raise UserError(f"--forwarded-allow-ips: {entry!r} is not an IP address or network") from None
    return ",".join(entries)


def uvicorn_options(host: str, port: int, allow_ips: str | None) -> dict[str, Any]:
    """How uvicorn runs the app: forwarded headers are read only from ``allow_ips`` (None: never)."""
    if allow_ips is None:
        return {"host": host, "port": port, "log_level": "info", "proxy_headers": False}
    return {"host": host, "port": port, "log_level": "info", "proxy_headers": True, "forwarded_allow_ips": allow_ips}


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from pipeline.records import data_home
    from pipeline.runtime import return_freed_memory
    from pipeline.web import WebSettings, create_app

    return_freed_memory()
    if args.max_upload_mb < 1:
        raise UserError("--max-upload-mb must be at least 1")
    options = uvicorn_options(args.host, args.port, forwarded_allow_ips(args.forwarded_allow_ips))
    home = args.store or data_home()
    settings = WebSettings(
        home=Path(home),
        db_url=args.db,
        max_upload_bytes=args.max_upload_mb * 2**20,
        secure_cookies=args.secure_cookies,
        assess_config=args.assess_config,
        assess_overrides=tuple(args.assess_overrides),
    )
    try:
        app = create_app(settings)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.secure_cookies:
        print(
            "smp serve: warning: listening beyond this machine without --secure-cookies; put the app behind HTTPS",
            file=sys.stderr,
        )
    print(f"smp serve: http://{args.host}:{args.port}/ (records {app.state.ctx.records.url}, data {home})")
    uvicorn.run(app, **options)
    return 0


def _records(args: argparse.Namespace):
    from pipeline.commands.visit import _open

    records, _ = _open(args)
    return records


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise UserError("no password on standard input")
        return line.rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise UserError("the passwords differ")
    return first


def run_users_add(args: argparse.Namespace) -> int:
    from pipeline.web.auth import AuthError, create_user

    password = _read_password(args)
    records = _records(args)
    try:
        with records.transaction() as s:
            user_id = create_user(s, args.username, clinic=args.clinic, role=args.role, password=password)
    except AuthError as exc:
        raise UserError(str(exc)) from None
    name, clinic = args.username.strip().lower(), args.clinic.strip().lower()
    print(f"user {name} ({args.role}, clinic {clinic}) added, id {user_id}")
    return 0


def run_users_passwd(args: argparse.Namespace) -> int:
    from pipeline.web.auth import AuthError, set_password

    password = _read_password(args)
    records = _records(args)
    try:
        with records.transaction() as s:
            set_password(s, args.username, password)
    except AuthError as exc:
        raise UserError(str(exc)) from None
    print(f"password of {args.username.strip().lower()} changed; their browser sessions ended")
    return 0


def run_users_token(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from pipeline.records.schema import User
    from pipeline.web.auth import AuthError, issue_token

    records = _records(args)
    try:
        with records.transaction() as s:
            user_id = s.scalar(sa.select(User.id).where(User.username == args.username.strip().lower()))
            if user_id is None:
                raise UserError(f"no user {args.username!r}")
            token_id, token = issue_token(s, user_id, args.name)
    except AuthError as exc:
        raise UserError(str(exc)) from None
    print(token)
    print(f"token {token_id} ({args.name}) for {args.username}: shown once, keep it secret", file=sys.stderr)
    return 0


def run_users_revoke(args: argparse.Namespace) -> int:
    from datetime import datetime

    from pipeline.web.auth import revoke_token

    records = _records(args)
    with records.transaction() as s:
        if not revoke_token(s, args.token_id, datetime.now(UTC)):
            raise UserError(f"no token {args.token_id}")
    print(f"token {args.token_id} revoked")
    return 0


def run_users_list(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from pipeline.records.schema import ApiToken, Clinic, User

    records = _records(args)
    with records.session(read_only=True) as s:
        users = s.execute(
            sa.select(User, Clinic.slug).join(Clinic, Clinic.id == User.clinic_id).order_by(Clinic.slug, User.username)
        ).all()
        tokens = s.scalars(sa.select(ApiToken).order_by(ApiToken.id)).all()
    if not users:
        print("no users (add one with 'smp users add')")
        return 0
    for u, slug in users:
        print(f"{slug}  {u.username}  {u.role}{'' if u.active else '  (inactive)'}")
        for t in tokens:
            if t.user_id == u.id:
                state = (
                    "revoked"
                    if t.revoked_at
                    else f"last used {t.last_used_at:%Y-%m-%d}"
                    if t.last_used_at
                    else "never used"
                )
                print(f"    token {t.id}  {t.prefix}...  {t.name}  ({state})")
    return 0
