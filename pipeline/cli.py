"""The ``smp`` console command.

Each subcommand lives in ``pipeline/commands/<name>.py`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (a callable
taking the parsed arguments and returning an exit code). A subcommand that must
not keep freed memory for reuse (``smp serve``) sets ``keep_freed_memory=False``
among its defaults (:mod:`pipeline.runtime`). Errors a user can fix
(bad config, missing file, bad input) are printed as one line and give exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from data.config import ConfigError
from pipeline import __version__
from pipeline.errors import UserError
from pipeline.runtime import reuse_freed_memory

COMMANDS = (
    "synth",
    "card",
    "import_labels",
    "train",
    "evaluate",
    "assess",
    "compare",
    "visit",
    "track",
    "report",
    "serve",
    "batch",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smp",
        description=(
            "smp-assess: score scalp micropigmentation (SMP) from photos. "
            "Run 'smp COMMAND --help' for the options of each command."
        ),
    )
    parser.add_argument("--version", action="version", version=f"smp-assess {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"pipeline.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "keep_freed_memory", True):
        reuse_freed_memory()
    # MLflow's own progress lines (creating tables, experiments) are not the user's news (it reads this
    # when it is first imported, which is later and only by the commands that track)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    try:
        return int(args.func(args) or 0)
    except (ConfigError, UserError, FileNotFoundError) as exc:
        print(f"smp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"smp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
