"""The one clock: every timestamp fibreflow stores or shows is timezone-aware UTC."""

from __future__ import annotations

import datetime as dt


def utc_now() -> dt.datetime:
    """Now, as an aware UTC datetime (the store's ``TIMESTAMPTZ`` columns expect aware values)."""
    return dt.datetime.now(dt.UTC)


__all__ = ["utc_now"]
