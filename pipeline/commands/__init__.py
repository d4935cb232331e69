"""One module per ``smp`` subcommand; each exposes ``register(subparsers)``."""

#: Help of every ``--db`` option (records database URL).
DB_HELP = (
    "records database URL (default: $SMP_DATABASE_URL, else sqlite:///<$SMP_HOME or ./smp-data>/records.db; "
    "PostgreSQL: postgresql://user@host/db)"
)


def add_settings_options(parser, *, what: str, default: str, example: str | None = None, prefix: str = "") -> None:
    """``--config YAML`` (the ``what`` settings, default ``configs/<default>``) and ``--set KEY=VALUE``
    (repeatable, into ``args.overrides``): how every command is told its settings."""
    from pathlib import Path

    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="YAML",
        help=f"{prefix}{what} settings (default configs/{default})",
    )
    eg = f", e.g. --set {example}" if example else ""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"{prefix}override one {what} setting{eg} (repeatable)",
    )


def add_subject_options(parser, visits: tuple[str, ...] = ("",)) -> None:
    """``--client`` and ``--region``, and for each of ``visits`` (an option prefix: "" or
    "before-"/"after-") ``--<prefix>date``, ``--<prefix>kind`` and ``--<prefix>session``: whose photo it
    is and from which visit, written into assessment.json (``subject``) and naming the reports."""
    parser.add_argument("--client", default=None, metavar="ID", help="the client the photos are of (names the reports)")
    parser.add_argument("--region", default=None, metavar="NAME", help="the region they show (crown, vertex, ...)")
    for prefix in visits:
        which = f"the {prefix[:-1]} photo's" if prefix else "the photo's"
        parser.add_argument(f"--{prefix}date", default=None, metavar="YYYY-MM-DD", help=f"{which} visit date")
        parser.add_argument(
            f"--{prefix}kind",
            default=None,
            metavar="KIND",
            help=f"{which} visit kind: baseline, session, follow-up or touch-up",
        )
        parser.add_argument(
            f"--{prefix}session",
            default=None,
            metavar="N",
            help="the session or touch-up number (with --" + f"{prefix}kind session or touch-up)",
        )


def subject_from_args(args, prefix: str = ""):
    """The :class:`pipeline.subject.Subject` the options of :func:`add_subject_options` give;
    a :class:`pipeline.errors.UserError` naming the option when one is malformed."""
    from pipeline.errors import UserError
    from pipeline.subject import subject_from_options

    attr = prefix.replace("-", "_")
    try:
        return subject_from_options(
            client=args.client,
            region=args.region,
            date=getattr(args, f"{attr}date"),
            kind=getattr(args, f"{attr}kind"),
            session=getattr(args, f"{attr}session"),
        )
    except ValueError as exc:
        raise UserError(f"--{prefix}date/--{prefix}kind/--client/--region: {exc}") from None
