"""Secrets out of text bound for messages, logs and the store: one pattern set for every part."""

from __future__ import annotations

import re

_SECRET_KV = re.compile(r"(?i)\b((?:password|token|secret)\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s'\"]+)")
_URL_PASSWORD = re.compile(r"(://[^/:@\s]+:)[^@/\s]+(@)")


def redact_url(text: str) -> str:
    """``text`` (a URL, a libpq conninfo, or a message quoting one) fit for messages: every
    ``password=`` / ``token=`` / ``secret=`` value and every URL's password replaced by ``***``."""
    return _URL_PASSWORD.sub(r"\1***\2", _SECRET_KV.sub(r"\1***", text))
