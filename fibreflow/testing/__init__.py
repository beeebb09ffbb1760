"""Deterministic stand-ins for outside services, shipped for the demo, benchmarks and tests."""

from __future__ import annotations

from fibreflow.testing.slack_receiver import ReceivedMessage, ReceivedRequest, SlackReceiver

__all__ = ["ReceivedMessage", "ReceivedRequest", "SlackReceiver"]
