"""Preflight: before any money is spent, check that the services a build needs accept its keys.

``fibreflow doctor --live`` and the start of every build and autopilot run call ``preflight``:

- the model API (when a model will be called): the key is accepted and every tier's model ID (and
  a ``--model`` ID) exists, through the Models API (``LLMClient.retrieve_model``, the real SDK's
  ``models.retrieve``). Offline (``--offline``, ``models.offline``) this asks the scripted server,
  never a network API.
- E2B (when that backend is chosen): the key (``sandbox.e2b_api_key_env``, ``E2B_API_KEY``) is
  accepted, by listing fibreflow's sandboxes (the cheapest authenticated call) at E2B's cloud or
  at ``sandbox.e2b_api_url`` (your own hosts, ``fibreflow sandbox serve``).
- Slack (when ``SLACK_BOT_TOKEN`` is set): ``auth.test`` accepts the token.

Each check names what is at fault (the environment variable, the setting, the model ID);
``require`` raises one ConfigError listing every failed check, so the CLI exits 2 before an
attempt starts. Secrets never appear in a message: only the names of their variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fibreflow.config import Settings
from fibreflow.errors import ConfigError, LLMError


@dataclass(frozen=True)
class Check:
    """One preflight check: what was checked, whether it passed, and what is at fault if not."""

    name: str
    ok: bool
    detail: str
    subject: str | None = None
    """The environment variable, setting or model ID a failure is about."""

    def to_dict(self) -> dict[str, Any]:
        """The ``doctor --live --json`` entry."""
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "subject": self.subject}


def check_models(settings: Settings, *, offline: bool, extra_models: Sequence[str] = ()) -> list[Check]:
    """The key is accepted and each tier's model ID (and ``extra_models``) exists."""
    from fibreflow.models.client import LLMClient

    offline = offline or settings.models.offline
    where = "the scripted model (offline)" if offline else "the Anthropic API"
    try:
        client = LLMClient(settings=settings, offline=offline)
    except ConfigError as exc:
        return [Check("anthropic key", False, str(exc), exc.key or "ANTHROPIC_API_KEY")]
    wanted: dict[str, str] = {m: f"models.tiers.{t}" for t, m in settings.models.tiers.items()}
    for model in extra_models:
        wanted.setdefault(model, "--model")
    checks: list[Check] = []
    with client:
        for model, setting in wanted.items():
            try:
                client.retrieve_model(model)
            except LLMError as exc:
                if exc.status_code in (401, 403):
                    return [Check("anthropic key", False, f"ANTHROPIC_API_KEY is not accepted by {where} "
                                                          f"({exc})", "ANTHROPIC_API_KEY")]
                if exc.status_code == 404:
                    checks.append(Check(f"model {model}", False, f"model ID {model!r} ({setting}) does not exist "
                                                                 f"at {where}", model))
                    continue
                if exc.status_code is None:
                    url = "models.base_url / ANTHROPIC_BASE_URL"
                    return [Check("anthropic api", False, f"{where} cannot be reached ({exc}); check {url}",
                                  "models.base_url")]
                checks.append(Check(f"model {model}", False, f"could not check model ID {model!r} ({setting}): "
                                                             f"{exc}", model))
                continue
            checks.append(Check(f"model {model}", True, f"{setting} exists at {where}", model))
    return [Check("anthropic key", True, f"accepted by {where}", "ANTHROPIC_API_KEY"), *checks]


def check_e2b(settings: Settings) -> Check:
    """The E2B key is accepted: one authenticated listing of fibreflow's sandboxes, no retry."""
    from fibreflow.errors import SandboxError, SandboxUnavailable
    from fibreflow.sandbox.e2b import E2BBackend

    key_env = settings.sandbox.e2b_api_key_env
    where = settings.sandbox.e2b_api_url or "E2B's cloud"
    try:
        E2BBackend(settings=settings, max_tries=1).list_sandboxes()
    except SandboxUnavailable as exc:  # no key, no SDK, or the key refused
        return Check("e2b key", False, f"{exc}; or use --backend local", key_env)
    except SandboxError as exc:
        return Check("e2b key", False, f"E2B at {where} could not be asked ({exc}); check sandbox.e2b_api_url",
                     "sandbox.e2b_api_url")
    return Check("e2b key", True, f"{key_env} accepted by {where}", key_env)


def check_slack(settings: Settings, environ: Mapping[str, str]) -> Check | None:
    """``auth.test`` accepts ``SLACK_BOT_TOKEN`` (None when no bot token is configured)."""
    token = environ.get("SLACK_BOT_TOKEN", "").strip()
    if not token:
        return None
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

    base_url = settings.slack.base_url or WebClient.BASE_URL
    try:
        answer = WebClient(token=token, base_url=base_url, timeout=10).auth_test()
    except SlackApiError as exc:
        error = exc.response.get("error") if exc.response is not None else None
        return Check("slack", False, f"Slack auth.test refused SLACK_BOT_TOKEN ({error or 'error'})", "SLACK_BOT_TOKEN")
    except OSError as exc:
        return Check("slack", False, f"Slack cannot be reached at {base_url} ({type(exc).__name__}); check "
                                     "slack.base_url", "slack.base_url")
    return Check("slack", True, f"SLACK_BOT_TOKEN accepted (team {answer.get('team') or '?'})", "SLACK_BOT_TOKEN")


def preflight(settings: Settings, *, models: bool, offline: bool = False, backend: str = "local",
              extra_models: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> list[Check]:
    """Every check a run needs: models (when ``models``), E2B (``backend == "e2b"``), Slack (when a
    bot token is set)."""
    env = os.environ if environ is None else environ
    checks = check_models(settings, offline=offline, extra_models=extra_models) if models else []
    if backend == "e2b":
        checks.append(check_e2b(settings))
    slack = check_slack(settings, env)
    if slack is not None:
        checks.append(slack)
    return checks


def require(checks: Sequence[Check]) -> None:
    """Raise one ConfigError naming every failed check's variable, setting or model ID."""
    failed = [c for c in checks if not c.ok]
    if failed:
        raise ConfigError("preflight failed, nothing was started: " + "; ".join(c.detail for c in failed),
                          key=failed[0].subject)


__all__ = ["Check", "check_e2b", "check_models", "check_slack", "preflight", "require"]
