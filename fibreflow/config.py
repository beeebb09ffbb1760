"""Settings from ``fibreflow.yaml`` and the environment.

The file is found through ``FIBREFLOW_CONFIG``, else ``./fibreflow.yaml``; it is optional.
Secrets (API keys, tokens, webhook URLs) are read from the environment only, never from the
file, so they cannot end up in the store or a report.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fibreflow.errors import ConfigError
from fibreflow.yamlio import load_yaml

SECRET_ENV_VARS = ("ANTHROPIC_API_KEY", "E2B_API_KEY", "SLACK_BOT_TOKEN", "SLACK_WEBHOOK_URL")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreSettings(_Section):
    lock_timeout_s: float = Field(60.0, description="Longest wait for the store's cross-process lock.")
    batch_size: int = Field(500, description="Rows the in-process writer inserts per transaction.")
    flush_interval_s: float = Field(0.2, description="Longest a queued row waits before it is written.")


class SlackSettings(_Section):
    channel: str = Field("#fibreflow-alerts", description="Default channel for bot-token delivery.")
    base_url: str | None = Field(None, description="Slack Web API base URL (tests point it locally).")


class SLASettings(_Section):
    config_path: Path = Field(Path("data/slas.example.yaml"), description="Default SLA definitions file.")
    check_timeout_s: float = Field(10.0, description="Per-check timeout when a check sets none.")


class SandboxSettings(_Section):
    backend: str = Field("local", description="Default sandbox backend: local or e2b.")
    profile: str = Field("python-tests", description="Default sandbox profile.")
    e2b_vcpu_second_usd: float = Field(0.000014, description="E2B price per vCPU-second.")
    e2b_gib_second_usd: float = Field(0.0000045, description="E2B price per GiB-second of memory.")
    e2b_template: str = Field("code-interpreter-v1", description="E2B template for new sandboxes.")
    e2b_concurrency: int = Field(20, description="Concurrent E2B sandboxes the plan allows.")


class Settings(_Section):
    """Everything configurable; every field has a default so no file is needed."""

    db_path: Path = Field(Path("data/fibreflow.duckdb"), description="DuckDB store; FIBREFLOW_DB overrides.")
    reports_dir: Path = Field(Path("reports"), description="Where papermill reports are written.")
    state_dir: Path = Field(Path(".fibreflow"), description="Runtime state (sandbox registry, pids).")
    store: StoreSettings = StoreSettings()
    slack: SlackSettings = SlackSettings()
    sla: SLASettings = SLASettings()
    sandbox: SandboxSettings = SandboxSettings()

    source: Path | None = Field(None, exclude=True, description="The file these settings came from.")

    @cached_property
    def secrets_present(self) -> dict[str, bool]:
        """Which secret variables are set (never their values)."""
        return {name: bool(os.environ.get(name)) for name in SECRET_ENV_VARS}


def config_path() -> Path | None:
    """The settings file in force: ``FIBREFLOW_CONFIG`` or ``./fibreflow.yaml`` if it exists."""
    env = os.environ.get("FIBREFLOW_CONFIG")
    if env:
        return Path(env)
    local = Path("fibreflow.yaml")
    return local if local.exists() else None


def load_settings(path: str | Path | None = None) -> Settings:
    """Load settings; unknown keys and bad values raise ConfigError naming key and file."""
    p = Path(path) if path is not None else config_path()
    data: dict[str, Any] = {}
    loaded = None
    if p is not None:
        loaded = load_yaml(p)
        if loaded.data is None:
            loaded.data = {}
        if not isinstance(loaded.data, dict):
            raise loaded.error("the top level must be a mapping of settings")
        data = dict(loaded.data)
    if os.environ.get("FIBREFLOW_DB"):
        data["db_path"] = os.environ["FIBREFLOW_DB"]
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        keys = [str(k) for k in err["loc"]]
        msg = f"unknown key '{'.'.join(keys)}'" if err["type"] == "extra_forbidden" else \
            f"{'.'.join(keys)}: {err['msg']}"
        if loaded is not None:
            raise loaded.error(msg, keys) from None
        raise ConfigError(msg, key=".".join(keys)) from None
    return settings.model_copy(update={"source": p})
