"""Numbers and dates written for people: thousands separators, percentages, units, a dash for
anything missing. Nothing here ever returns "nan", "None" or "inf".

Month names are written out in English rather than through the locale (``strftime``), so a
report reads the same on every machine.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from data.visits import PIGMENTING_KINDS

__all__ = [
    "MISSING",
    "MINUS",
    "as_number",
    "fmt_int",
    "fmt_num",
    "fmt_pct",
    "fmt_points",
    "fmt_signed",
    "fmt_date",
    "fmt_month",
    "fmt_month_short",
    "parse_date",
    "plural",
    "short_hash",
    "join_words",
]

#: What a missing value reads as.
MISSING = "\u2014"
#: A real minus sign (a hyphen looks like a dash in tables).
MINUS = "\u2212"

_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def as_number(v: Any) -> float | None:
    """``v`` as a finite float, else None (None, NaN, inf, booleans, text that is not a number)."""
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _minus(text: str) -> str:
    return text.replace("-", MINUS)


def fmt_int(v: Any) -> str:
    """``1204`` -> ``1,204``."""
    f = as_number(v)
    return MISSING if f is None else _minus(f"{round(f):,}")


def fmt_num(v: Any, digits: int = 1, unit: str = "") -> str:
    """A number with ``digits`` decimals and thousands separators, then `` unit`` if given."""
    f = as_number(v)
    if f is None:
        return MISSING
    text = _minus(f"{f:,.{digits}f}")
    if text in (f"{MINUS}0", f"{MINUS}0." + "0" * digits):
        text = text[1:]
    return f"{text} {unit}" if unit else text


def _pct_digits(pct: float) -> int:
    a = abs(pct)
    if a == 0 or a >= 10:
        return 0
    return 1


def fmt_pct(v: Any, digits: int | None = None) -> str:
    """A fraction as a percentage: 0.42 -> ``42%``, 0.042 -> ``4.2%``, 0 -> ``0%``, 0.0002 -> ``<0.1%``."""
    f = as_number(v)
    if f is None:
        return MISSING
    pct = 100.0 * f
    d = _pct_digits(pct) if digits is None else digits
    text = f"{pct:,.{d}f}"
    if float(text.replace(",", "")) == 0:
        return f"<{10.0**-d:g}%" if pct > 0 else "0%"
    return _minus(text) + "%"


def fmt_points(v: Any, digits: int | None = None) -> str:
    """A change of a fraction in percentage points, signed: -0.24 -> ``−24 points``."""
    f = as_number(v)
    if f is None:
        return MISSING
    pct = 100.0 * f
    d = _pct_digits(pct) if digits is None else digits
    text = f"{abs(pct):,.{d}f}"
    if float(text.replace(",", "")) == 0:
        return "0 points"
    sign = "+" if pct > 0 else MINUS
    return f"{sign}{text} {'point' if text == '1' else 'points'}"


def fmt_signed(v: Any, digits: int = 1, unit: str = "") -> str:
    """A change with its sign: ``+10.5``, ``−0.9``, ``0``."""
    f = as_number(v)
    if f is None:
        return MISSING
    text = f"{abs(f):,.{digits}f}"
    if float(text.replace(",", "")) == 0:
        text = "0"
    else:
        text = ("+" if f > 0 else MINUS) + text
    return f"{text} {unit}" if unit else text


def parse_date(v: Any) -> dt.date | None:
    """An ISO date or date-time (text or object) as a date, else None."""
    if isinstance(v, dt.datetime):
        return v.date()
    if isinstance(v, dt.date):
        return v
    if not isinstance(v, str) or not v:
        return None
    try:
        return dt.datetime.fromisoformat(v).date()
    except ValueError:
        try:
            return dt.date.fromisoformat(v[:10])
        except ValueError:
            return None


def fmt_date(v: Any) -> str:
    """``2026-03-01`` -> ``1 Mar 2026``."""
    d = parse_date(v)
    return MISSING if d is None else f"{d.day} {_MONTHS[d.month - 1][:3]} {d.year}"


def fmt_month(v: Any) -> str:
    """``2027-03-14`` -> ``March 2027``."""
    d = parse_date(v)
    return MISSING if d is None else f"{_MONTHS[d.month - 1]} {d.year}"


def fmt_month_short(v: Any) -> str:
    """``2026-12-02`` -> ``Dec 2026``."""
    d = parse_date(v)
    return MISSING if d is None else f"{_MONTHS[d.month - 1][:3]} {d.year}"


def plural(n: Any, one: str, many: str | None = None) -> str:
    """``1 dot``, ``1,204 dots`` (``many`` defaults to ``one + 's'``)."""
    f = as_number(n)
    if f is None:
        return f"{MISSING} {many or one + 's'}"
    return f"{fmt_int(f)} {one if round(f) == 1 else (many or one + 's')}"


def short_hash(v: Any, n: int = 12) -> str:
    return v[:n] if isinstance(v, str) and v else MISSING


def join_words(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = [i for i in items if i]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def kind_label(kind: Any, session: Any) -> str:
    """``session 2``, ``touch-up 1``, ``follow-up``: a visit's kind with its number where it has one."""
    s = as_number(session)
    kind = str(kind) if kind else MISSING
    if kind in PIGMENTING_KINDS and s:
        return f"{kind} {int(s)}"
    return kind
