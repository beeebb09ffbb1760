"""Isolated sandboxes for agent attempts: the protocol, profiles, backends and the manager."""

from fibreflow.sandbox.base import CommandResult, Sandbox, SandboxProfile

__all__ = ["CommandResult", "Sandbox", "SandboxProfile"]
