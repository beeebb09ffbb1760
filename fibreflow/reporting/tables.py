"""Report tables for people: percentages as %, dollars as $ with cents, error budgets in words.

Every report shows its tables through :func:`people_table` (a pandas ``Styler`` without the
DataFrame's index column); the CLI and the twin format single values with the ``format_*``
functions, so a number reads the same everywhere. A column's kind follows its name:
``compliance``, ``target``, ``*share``, ``*_rate`` (not ``burn_rate``), ``*_risk`` and ``*_pct`` fractions
are percentages; ``*_usd``, ``*cost*``, ``*projection*`` and ``savings*`` are dollars;
``error_budget_left`` is a budget ("62% left", "overspent 6.7x"); ``burn_rate`` is a multiple
("6.7x"). Other numbers get thousands separators, and two decimals when they are fractional.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pandas as pd


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def format_percent(value: Any, digits: int = 1) -> str:
    """A fraction as a percentage (0.953 -> "95.3%"); missing -> "-"."""
    if _missing(value):
        return "-"
    text = f"{float(value):.{digits}%}"
    return text.replace(".0%", "%") if digits == 1 else text


def format_dollars(value: Any) -> str:
    """Dollars with cents ("$1,234.50"); a non-zero amount under a cent reads "<$0.01"."""
    if _missing(value):
        return "-"
    amount = float(value)
    if 0 < abs(amount) < 0.005:
        return "<$0.01" if amount > 0 else "-<$0.01"
    return f"-${-amount:,.2f}" if amount < 0 else f"${amount:,.2f}"


def format_multiple(value: Any) -> str:
    """A ratio as a multiple ("6.7x"); missing -> "-"."""
    return "-" if _missing(value) else f"{float(value):.1f}x"


def format_budget(left: Any) -> str:
    """An error budget left (1.0 untouched, negative overspent) in words: "62% left", "used up",
    "overspent 6.7x" (for -5.67: the window used 6.67 budgets)."""
    if _missing(left):
        return "-"
    left = float(left)
    if left > 0:
        return f"{format_percent(left, 0)} left"
    if left == 0:
        return "used up"
    return f"overspent {format_multiple(1 - left)}"


def column_format(name: str) -> Callable[[Any], str] | None:
    """The formatter of a column, by its name (see the module doc); None: shown as it is."""
    n = name.lower()
    if n == "error_budget_left":
        return format_budget
    if n == "burn_rate":
        return format_multiple
    if n in ("compliance", "target") or n.endswith(("share", "_rate", "_pct", "_risk")):
        return format_percent
    if n.endswith("_usd") or "cost" in n or "projection" in n or n.startswith("savings"):
        return format_dollars
    return None


def format_number(value: Any) -> str:
    """A count with thousands separators ("4,213,079"), a fraction with two decimals; missing -> "-"."""
    if _missing(value):
        return "-"
    number = float(value)
    return f"{int(number):,}" if number.is_integer() else f"{number:,.2f}"


def people_frame(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its dollar, percentage, budget and multiple columns as text, index dropped."""
    out = df.reset_index(drop=True).copy()
    for col in out.columns:
        fmt = column_format(str(col))
        numeric = pd.api.types.is_numeric_dtype(out[col]) and not pd.api.types.is_bool_dtype(out[col])
        if fmt is None and numeric:
            fmt = format_number
        if fmt is not None and (numeric or out[col].dtype == object):
            out[col] = [fmt(v) if not isinstance(v, str | bool) else v for v in out[col]]
    return out


def people_table(df: pd.DataFrame) -> Any:
    """The table a report shows: :func:`people_frame` as a ``Styler`` without the index column."""
    return people_frame(df).style.hide(axis="index")


__all__ = ["column_format", "format_budget", "format_dollars", "format_multiple", "format_number", "format_percent",
           "people_frame", "people_table"]
