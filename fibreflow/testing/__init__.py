"""Local stand-ins for the outside services fibreflow talks to, shipped in the package because the
demo and the benchmarks use them as well as the tests. They depend on nothing but the standard
library, so any layer (and the offline mode) may start one.

Modules:

- ``server``: ``LocalServer``, the one lifecycle (127.0.0.1, free port, daemon thread, context manager).
- ``slack_receiver``: ``SlackReceiver``, incoming webhooks and ``chat.postMessage`` with injected failures.
"""

from __future__ import annotations

from fibreflow.testing.slack_receiver import ReceivedMessage, ReceivedRequest, SlackReceiver

__all__ = ["ReceivedMessage", "ReceivedRequest", "SlackReceiver"]
