"""One module per ``smp`` subcommand; each exposes ``register(subparsers)``."""

#: Help of every ``--db`` option (records database URL).
DB_HELP = ("records database URL (default: $SMP_DATABASE_URL, else sqlite:///<$SMP_HOME or ./smp-data>/records.db; "
           "PostgreSQL: postgresql://user@host/db)")
