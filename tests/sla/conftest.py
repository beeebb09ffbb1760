"""Fixtures shared by the SLA tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fibreflow.sla.localdata import LocalHTTPSource


@pytest.fixture
def http() -> Iterator[LocalHTTPSource]:
    """A local HTTP source on 127.0.0.1 whose routes a test sets."""
    server = LocalHTTPSource()
    yield server
    server.close()
