"""Errors the CLI reports to the user as a single line (exit code 2)."""


class UserError(Exception):
    """A problem with what the user asked for: bad input file, impossible option."""
