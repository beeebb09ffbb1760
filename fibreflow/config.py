"""Settings from ``fibreflow.yaml`` and the environment.

The file is found through ``FIBREFLOW_CONFIG``, else ``./fibreflow.yaml``; it is optional.
Secrets (API keys, tokens, webhook URLs) are read from the environment only, never from the
file, so they cannot end up in the store or a report.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fibreflow.errors import ConfigError
from fibreflow.yamlio import load_yaml

SECRET_ENV_VARS = ("ANTHROPIC_API_KEY", "E2B_API_KEY", "SLACK_BOT_TOKEN", "SLACK_WEBHOOK_URL")


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "fibreflow"


def _check_tiers(names: Iterable[str], *, what: str = "unknown tier") -> None:
    """ValueError naming the first name that is not a tier, and the known ones."""
    unknown = sorted(set(names) - set(TIERS))
    if unknown:
        raise ValueError(f"{what} {unknown[0]!r} (known: {', '.join(TIERS)})")


class _Section(BaseModel):
    # every number has a range, and none may be inf or nan: a setting cannot stall, flood or overflow
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


_DAY_S = 86_400.0


class StoreSettings(_Section):
    lock_timeout_s: float = Field(60.0, gt=0, le=3600, description="Longest wait for the store's cross-process lock.")
    batch_size: int = Field(500, ge=1, le=100_000, description="Rows the in-process writer inserts per transaction.")
    flush_interval_s: float = Field(0.2, gt=0, le=60, description="Longest a queued row waits before it is written.")


class SlackSettings(_Section):
    channel: str = Field("#fibreflow-alerts", description="Default channel for bot-token delivery.")
    base_url: str | None = Field(None, description="Slack Web API base URL (tests point it locally).")


class SLASettings(_Section):
    config_path: Path = Field(Path("data/slas.example.yaml"), description="Default SLA definitions file.")
    check_timeout_s: float = Field(10.0, gt=0, le=3600, description="Per-check timeout when a check sets none.")


class SandboxSettings(_Section):
    backend: str = Field("local", description="Default sandbox backend: local or e2b.")
    profile: str = Field("python-tests", description="Default sandbox profile.")
    e2b_vcpu_second_usd: float = Field(0.000014, ge=0, le=1, description="E2B price per vCPU-second.")
    e2b_gib_second_usd: float = Field(0.0000045, ge=0, le=1, description="E2B price per GiB-second of memory.")
    e2b_template: str = Field("code-interpreter-v1", description="E2B template for new sandboxes.")
    e2b_concurrency: int = Field(20, ge=1, le=100_000, description="Concurrent E2B sandboxes the plan allows.")
    e2b_creates_per_second: float = Field(1.0, ge=0, le=1000, description="E2B sandbox creations per second "
                                          "(plan limit: Hobby 1, Pro 5); 0 turns the throttle off.")


TIERS = ("haiku", "sonnet", "opus")
_DEFAULT_TIER_MODELS = {"haiku": "claude-haiku-5-5", "sonnet": "claude-sonnet-5-5", "opus": "claude-opus-5-5"}


class ModelsSettings(_Section):
    """Model tiers, pricing and the LLM client's retry policy."""

    tiers: dict[str, str] = Field(default_factory=lambda: dict(_DEFAULT_TIER_MODELS),
                                  description="Model ID per tier (haiku, sonnet, opus); a new model is a config change.")
    pricing_path: Path = Field(Path("data/pricing.yaml"), description="Prices per model in $/MTok.")
    max_retries: int = Field(4, ge=0, le=20,
                             description="Retries after the first try on 429, 529, 5xx and connection errors.")
    timeout_s: float = Field(120.0, gt=0, le=3600, description="Per-try HTTP timeout of a model call.")
    backoff_base_s: float = Field(1.0, ge=0, le=300, description="First retry delay; doubles per retry, with jitter.")
    backoff_max_s: float = Field(30.0, ge=0, le=3600,
                                 description="Longest delay between tries (retry-after included).")
    base_url: str | None = Field(None, description="Messages API base URL (None: the SDK's default).")
    offline: bool = Field(False, description="No network to any model API: every model call goes to the local "
                                             "scripted model, whatever the key and base_url (as --offline).")
    store_prompts: bool = Field(False, description="Store each call's task text in llm_calls (off: tokens only).")
    short_task_chars: int = Field(50, ge=0, le=100_000, description="Tasks shorter than this lean to the haiku tier.")
    agent_rules: dict[str, str] = Field(
        default_factory=lambda: {"vps-monitor": "haiku", "vlm-evaluator": "sonnet"},
        description="Agent name -> tier, applied before the text patterns (an explicit tier still wins).")

    @field_validator("tiers")
    @classmethod
    def _known_tiers(cls, value: dict[str, str]) -> dict[str, str]:
        _check_tiers(value)
        return {**_DEFAULT_TIER_MODELS, **value}

    @field_validator("agent_rules")
    @classmethod
    def _rule_tiers(cls, value: dict[str, str]) -> dict[str, str]:
        for agent, tier in value.items():
            _check_tiers([tier], what=f"agent {agent!r} maps to unknown tier")
        return value


class SelectionWeights(_Section):
    """Weights of the attempt score; normalized by their sum, so only their ratios matter."""

    coverage: float = Field(0.4, ge=0, le=1000, description="Weight of test coverage of the changed code (0..1).")
    tests_passed: float = Field(0.3, ge=0, le=1000, description="Weight of the share of tests that passed.")
    code_quality: float = Field(0.2, ge=0, le=1000,
                                description="Weight of code quality (ruff findings per changed line).")
    speed: float = Field(0.1, ge=0, le=1000, description="Weight of speed (fastest attempt = 1).")


class SelectionSettings(_Section):
    """How the best of N attempts is chosen and when a human must look."""

    weights: SelectionWeights = Field(default_factory=SelectionWeights,
                                      description="Weights of coverage, tests passed, quality and speed.")
    consensus_top_k: int = Field(3, ge=1, le=100, description="How many top attempts must agree for consensus.")
    consensus_threshold: float = Field(0.7, ge=0, le=1,
                                       description="Share of shared test inputs on which they must agree.")
    coverage_floor: float = Field(0.95, ge=0, le=1, description="Least coverage a winner needs to ship.")


class RateLimit(_Section):
    """One model tier's API rate limits (per organisation and model class)."""

    rpm: int = Field(..., gt=0, le=10**9, description="Requests per minute.")
    input_tpm: int = Field(..., gt=0, le=10**12, description="Input tokens per minute (input + cache writes; cache reads do not count).")
    output_tpm: int = Field(..., gt=0, le=10**12, description="Output tokens per minute.")


def _default_rate_limits() -> dict[str, RateLimit]:
    # Anthropic usage tier 2 as published in 2025; set your organisation's limits from the Console.
    return {tier: RateLimit(rpm=1000, input_tpm=450_000, output_tpm=90_000) for tier in TIERS}


class SimulationSettings(_Section):
    """Limits and budget the what-if simulator checks projections against."""

    calibration_days: float = Field(30.0, gt=0, le=36_500, description="Days of recorded history the simulator calibrates on.")
    monthly_budget_usd: float = Field(500.0, gt=0, le=1e12, description="Monthly spend (models + sandboxes) that must not be exceeded.")
    e2b_concurrency_limits: dict[str, Annotated[int, Field(ge=1, le=100_000)]] = Field(
        default_factory=lambda: {"hobby": 20, "pro": 100},
        description="Concurrent E2B sandboxes per plan; projected peak sandbox concurrency is checked against each.")
    rate_limits: dict[str, RateLimit] = Field(
        default_factory=_default_rate_limits,
        description="Per tier (haiku, sonnet, opus): rpm, input_tpm, output_tpm of the model API.")
    postgres_url: str | None = Field(
        None, description="PostgreSQL whose max_connections and open connections are read ('${VAR}' allowed); "
                          "unset or unreachable: the two settings below are used.")
    postgres_max_connections: int = Field(100, gt=0, le=1_000_000, description="max_connections when the server cannot be asked.")
    postgres_base_connections: int = Field(5, ge=0, le=1_000_000, description="Connections in use besides agents when the server cannot be asked.")
    postgres_connections_per_agent: float = Field(1.0, ge=0, le=1000, description="Connections one busy agent holds.")
    near_limit_share: float = Field(0.8, gt=0, lt=1, description="Share of a limit from which it is reported as near.")
    quality_risk_tolerance: float = Field(
        0.02, ge=0, le=1, description="Extra expected failure rate a cheaper routing mix may add and still be recommended.")

    @field_validator("rate_limits")
    @classmethod
    def _rate_tiers(cls, value: dict[str, RateLimit]) -> dict[str, RateLimit]:
        _check_tiers(value)
        return {**_default_rate_limits(), **value}


class SmokeCheck(_Section):
    """One smoke test after the staging deploy: an HTTP GET expecting a status, or a command."""

    name: str | None = Field(None, description="Label in the store and the notification (default: the URL or command).")
    url: str | None = Field(None, description="URL to GET ('${VAR}' and '{staging_url}' are expanded).")
    expect_status: int = Field(200, ge=100, le=599, description="HTTP status the URL must answer with.")
    command: str | None = Field(None, description="Shell command that must exit 0 (runs in a checkout of the winner).")
    timeout_s: float = Field(30.0, gt=0, le=_DAY_S, description="How long the check may take; a URL is retried until then.")

    @model_validator(mode="after")
    def _one_kind(self) -> SmokeCheck:
        if (self.url is None) == (self.command is None):
            raise ValueError("a smoke check needs exactly one of 'url' or 'command'")
        return self

    @property
    def label(self) -> str:
        """The name, else the URL or command."""
        return self.name or self.url or self.command or "smoke"


class SLAGateSettings(_Section):
    """The data-freshness gate run before each deploy step (``require_fresh_data``)."""

    names: list[str] | None = Field(None, description="SLAs to check (None: every SLA of the file).")
    policy: Literal["abort", "warn"] = Field("abort", description="abort: a violation stops the deploy; warn: it is recorded.")
    config_path: Path | None = Field(None, description="SLA definitions file (None: sla.config_path).")


class AutopilotSettings(_Section):
    """``fibreflow build --autopilot``: attempts, deploy commands, smoke checks, gate and notification.

    The coverage a winner needs is ``selection.coverage_floor``.
    """

    attempts: int = Field(15, ge=1, le=1000, description="Attempts per feature.")
    iterations: int = Field(2, ge=1, le=100, description="Rounds of attempts per feature: when no attempt of a round "
                            "passes, its failures are learned and the next round gets them as known pitfalls.")
    workers: int | None = Field(None, ge=1, le=1024, description="Attempts at once (None: the runner's default).")
    max_features: int = Field(12, ge=1, le=1000, description="Most features a goal may be decomposed into.")
    decompose_tier: str | None = Field(None, description="Model tier of the decomposition call (None: routed).")
    escalate_to: str | None = Field(None, description="Tier ladder ceiling: a feature starts at its routed tier "
                                    "and moves one tier up while no attempt passes, up to this tier (None: off).")
    branch_prefix: str = Field("fibreflow", description="Winners are committed to <prefix>/<run>/<feature>.")
    staging_command: str | None = Field(None, description="Shell command deploying the winner to staging "
                                        "(runs in a checkout of it; None: no staging deploy).")
    staging_url: str | None = Field(None, description="Where staging is reachable, for smoke checks and the "
                                    "message ('${VAR}' allowed; a FIBREFLOW_STAGING_URL=... line printed by "
                                    "the staging command wins).")
    production_command: str | None = Field(None, description="Shell command deploying the approved winner "
                                           "to production (None: approval deploys nothing).")
    command_timeout_s: float = Field(900.0, gt=0, le=_DAY_S, description="Longest a deploy command may run.")
    smoke_checks: list[SmokeCheck] = Field(default_factory=list, description="Checks run after the staging deploy.")
    sla_gate: SLAGateSettings | None = Field(None, description="Freshness gate before each deploy (None: no gate).")
    notify_channel: str | None = Field(None, description="Slack channel of the approval request (None: slack.channel).")

    @field_validator("decompose_tier", "escalate_to")
    @classmethod
    def _tier(cls, value: str | None) -> str | None:
        if value is not None:
            _check_tiers([value])
        return value


class Settings(_Section):
    """Everything configurable; every field has a default so no file is needed."""

    db_path: Path = Field(Path("data/fibreflow.duckdb"), description="DuckDB store; FIBREFLOW_DB overrides.")
    reports_dir: Path = Field(Path("reports"), description="Where papermill reports are written.")
    state_dir: Path = Field(default_factory=lambda: _default_state_dir(),
                            description="Runtime state (sandbox layers and registry, demo data layer); "
                                        "outside any repository so a build never writes into the user's tree.")
    store: StoreSettings = StoreSettings()
    slack: SlackSettings = SlackSettings()
    sla: SLASettings = SLASettings()
    sandbox: SandboxSettings = SandboxSettings()
    models: ModelsSettings = ModelsSettings()
    selection: SelectionSettings = SelectionSettings()
    simulation: SimulationSettings = SimulationSettings()
    autopilot: AutopilotSettings = AutopilotSettings()

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
