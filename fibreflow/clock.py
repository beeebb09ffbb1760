"""The one clock: every timestamp fibreflow stores or shows is timezone-aware UTC; every time
limit is a ``Deadline`` on the monotonic clock.

A ``Deadline`` is made once per attempt (``build/attempt.py`` ``run_attempt``, from the
attempt's ``AttemptLimits.timeout_s``) and travels in the ``AttemptTask`` through the agent into
every model call, where the LLM client caps each try's HTTP timeout and its retry sleeps by what
is left and stops retrying once it has run out.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass


def utc_now() -> dt.datetime:
    """Now, as an aware UTC datetime (the store's ``TIMESTAMPTZ`` columns expect aware values)."""
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Deadline:
    """A point on the monotonic clock by which work must end; ``expires_at=None`` never expires.

    ``limit_s`` is the limit it was made from (for messages such as "time limit of 5s").
    """

    expires_at: float | None = None
    limit_s: float | None = None

    @classmethod
    def after(cls, seconds: float | None) -> Deadline:
        """The deadline ``seconds`` from now (``None``: never)."""
        if seconds is None:
            return cls()
        return cls(time.monotonic() + max(0.0, float(seconds)), float(seconds))

    @property
    def bounded(self) -> bool:
        """Whether this deadline can expire at all."""
        return self.expires_at is not None

    def remaining_s(self) -> float | None:
        """Seconds left (negative once passed), or ``None`` when there is no deadline."""
        return None if self.expires_at is None else self.expires_at - time.monotonic()

    @property
    def expired(self) -> bool:
        """Whether the deadline has passed."""
        left = self.remaining_s()
        return left is not None and left <= 0

    def cap(self, seconds: float) -> float:
        """``seconds``, cut to the time left (never below 0)."""
        left = self.remaining_s()
        return seconds if left is None else max(0.0, min(seconds, left))

    def earliest(self, other: Deadline | None) -> Deadline:
        """The sooner of this deadline and ``other``."""
        if other is None or other.expires_at is None:
            return self
        if self.expires_at is None or other.expires_at < self.expires_at:
            return other
        return self

    def describe(self) -> str:
        """``time limit of 5s`` (or ``no time limit``), for messages."""
        if self.expires_at is None:
            return "no time limit"
        return f"time limit of {self.limit_s:g}s" if self.limit_s is not None else "deadline"


NO_DEADLINE = Deadline()

__all__ = ["NO_DEADLINE", "Deadline", "utc_now"]
