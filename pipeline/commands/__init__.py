"""One module per ``smp`` subcommand; each exposes ``register(subparsers)``."""
