"""Settings from ``fibreflow.yaml`` and the environment.

The file is found through ``FIBREFLOW_CONFIG``, else ``./fibreflow.yaml``; it is optional.
Secrets (API keys, tokens, webhook URLs) are read from the environment only, never from the
file, so they cannot end up in the store or a report.

A ``.env`` file in the working directory (``FIBREFLOW_ENV_FILE`` names another) may hold
``KEY=VALUE`` lines for any variable fibreflow reads (``ENV_VARS``): ``load_settings`` puts each
into the environment unless the environment already has it. Precedence, highest first: the
process environment, ``.env``, ``fibreflow.yaml``, the defaults. fibreflow never writes ``.env``.
``describe_settings`` says where each effective setting came from (``fibreflow config show``);
``settings_template`` renders every setting with its default and doc (``fibreflow init``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fibreflow.errors import ConfigError
from fibreflow.yamlio import LoadedYaml, load_yaml

SECRET_ENV_VARS = ("ANTHROPIC_API_KEY", "E2B_API_KEY", "SLACK_BOT_TOKEN", "SLACK_WEBHOOK_URL", "SLACK_SIGNING_SECRET",
                   "FIBREFLOW_STORE_TOKEN", "FIBREFLOW_SANDBOX_SERVER_KEY")


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
    """The store: where it is (``url``), its lock, the batched writer and the lake's upkeep."""

    url: str | None = Field(None, description="Where the store is: duckdb:///abs/path.duckdb (the embedded file), "
                            "quack://host:port (a `fibreflow store serve`; token in FIBREFLOW_STORE_TOKEN) or "
                            "ducklake:postgres:<libpq conninfo> (a lake; see data_path). None: the file db_path. "
                            "FIBREFLOW_STORE overrides.")
    data_path: str | None = Field(None, description="Lake only: the directory or object-store URL of the lake's "
                                  "data files.")
    lock_timeout_s: float = Field(60.0, gt=0, le=3600, description="Longest wait for the store's cross-process lock.")
    batch_size: int = Field(500, ge=1, le=100_000, description="Rows the in-process writer inserts per transaction.")
    flush_interval_s: float = Field(0.2, gt=0, le=60, description="Longest a queued row waits before it is written.")
    lake_inline_rows: int = Field(1000, ge=0, le=1_000_000, description="Lake only: inserts of up to this many "
                                  "rows go into the catalog, not a Parquet file each (0: never); compaction "
                                  "flushes them.")
    compact_every_s: float = Field(3600.0, ge=0, le=30 * _DAY_S, description="Lake only: `sla watch` runs "
                                   "`store compact` this often (0: never).")
    snapshot_retention_s: float = Field(7 * _DAY_S, ge=0, le=3650 * _DAY_S, description="Lake only: compaction "
                                        "expires snapshots (time travel, and the files only they use) older than this.")


class SlackSettings(_Section):
    """Slack delivery (the webhook URL and bot token come from the environment)."""

    channel: str = Field("#fibreflow-alerts", description="Default channel for bot-token delivery.")
    base_url: str | None = Field(None, description="Slack Web API base URL (tests point it locally).")


class SLASettings(_Section):
    """Data-freshness SLAs."""

    config_path: Path = Field(Path("data/slas.example.yaml"), description="Default SLA definitions file.")
    check_timeout_s: float = Field(10.0, gt=0, le=3600, description="Per-check timeout when a check sets none.")


class SandboxSettings(_Section):
    """Where attempts run: the sandbox backend, its profile and E2B's prices and limits."""

    backend: str = Field("local", description="Default sandbox backend: local or e2b.")
    profile: str = Field("python-tests", description="Default sandbox profile.")
    e2b_vcpu_second_usd: float = Field(0.000014, ge=0, le=1, description="E2B price per vCPU-second.")
    e2b_gib_second_usd: float = Field(0.0000045, ge=0, le=1, description="E2B price per GiB-second of memory.")
    e2b_template: str = Field("code-interpreter-v1", description="E2B template for new sandboxes.")
    e2b_concurrency: int = Field(20, ge=1, le=100_000, description="Concurrent E2B sandboxes the plan allows.")
    e2b_creates_per_second: float = Field(1.0, ge=0, le=1000, description="E2B sandbox creations per second "
                                          "(plan limit: Hobby 1, Pro 5); 0 turns the throttle off.")
    e2b_api_url: str | None = Field(None, description="URL of your own E2B-protocol sandbox hosts (`fibreflow "
                                    "sandbox serve`), e.g. https://sandboxes.example.com: the API and the sandbox "
                                    "traffic both go there. None: E2B's cloud (or e2b_domain).")
    e2b_domain: str | None = Field(None, description="E2B domain of self-hosted E2B infrastructure (api.DOMAIN, "
                                   "49983-ID.DOMAIN), as E2B_DOMAIN; ignored when e2b_api_url is set.")
    e2b_api_key_env: str = Field("E2B_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                 description="Name of the environment variable that holds the API key of these "
                                 "hosts (the key itself never goes in this file).")


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
                                        "(runs in a checkout of it); `build --autopilot` needs it unless --no-deploy.")
    staging_url: str | None = Field(None, description="Where staging is reachable, for smoke checks and the "
                                    "message ('${VAR}' allowed; a FIBREFLOW_STAGING_URL=... line printed by "
                                    "the staging command wins).")
    production_command: str | None = Field(None, description="Shell command deploying the approved winner "
                                           "to production; `fibreflow approve` needs it.")
    command_timeout_s: float = Field(900.0, gt=0, le=_DAY_S, description="Longest a deploy command may run.")
    suite_command: str | None = Field(None, description="The repository's whole test suite, run in a sandbox on "
                                      "the combined winners before staging (None: the run's test command, else "
                                      "python -m pytest -q).")
    smoke_checks: list[SmokeCheck] = Field(default_factory=list, description="Checks run after the staging deploy, "
                                           "at least one unless --no-deploy; e.g. [{name: health, url: "
                                           "'{staging_url}/health'}, {name: migrated, command: ./check.sh}].")
    sla_gate: SLAGateSettings | None = Field(None, description="Freshness gate before each deploy (None: no gate).")
    notify_channel: str | None = Field(None, description="Slack channel of the approval request (None: slack.channel).")

    @field_validator("decompose_tier", "escalate_to")
    @classmethod
    def _tier(cls, value: str | None) -> str | None:
        if value is not None:
            _check_tiers([value])
        return value


class BudgetSettings(_Section):
    """Spending limits over model and sandbox spend (``llm_calls`` and ``sandbox_sessions``, UTC days
    and months): an alert at 80% and at 100% of each, and a build starts no attempt that would cross one."""

    daily_usd: float | None = Field(None, gt=0, le=1e9, description="Most dollars per UTC day (None: no daily limit).")
    monthly_usd: float | None = Field(None, gt=0, le=1e9,
                                      description="Most dollars per UTC month (None: no monthly limit).")
    alert_channel: str | None = Field(None, description="Slack channel of the budget alerts (None: slack.channel).")


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
    budget: BudgetSettings = BudgetSettings()

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
    """Load settings (after ``./.env``, see the module docstring); unknown keys and bad values
    raise ConfigError naming key and file."""
    load_dotenv()
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
    if os.environ.get("FIBREFLOW_STORE"):
        store = data.get("store")
        data["store"] = {**(store if isinstance(store, dict) else {}), "url": os.environ["FIBREFLOW_STORE"]}
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


# -- the .env file, and where each setting came from ---------------------------------------

ENV_FILE_VAR = "FIBREFLOW_ENV_FILE"
ENV_VARS: dict[str, str] = {
    "ANTHROPIC_API_KEY": "API key of the Messages API (or of your gateway) for the claude agent and decomposition.",
    "ANTHROPIC_BASE_URL": "Messages API base URL of a gateway or proxy (models.base_url wins when set).",
    "E2B_API_KEY": "E2B API key, for sandbox.backend: e2b (optional).",
    "SLACK_WEBHOOK_URL": "Slack incoming webhook for SLA alerts and approval requests.",
    "SLACK_BOT_TOKEN": "Slack bot token (xoxb-...), instead of the webhook; also updates approval messages.",
    "SLACK_SIGNING_SECRET": "Slack app signing secret: `fibreflow approvals serve` verifies the buttons' requests.",
    "FIBREFLOW_CONFIG": "The settings file (default: ./fibreflow.yaml).",
    "FIBREFLOW_DB": "The store's DuckDB file (overrides db_path).",
    "FIBREFLOW_STORE": "The store's URL (overrides store.url): duckdb:///path, quack://host:port or ducklake:postgres:...",
    "FIBREFLOW_STORE_TOKEN": "Token of the store server (`fibreflow store serve` and quack:// clients).",
    "FIBREFLOW_SANDBOX_SERVER_KEY": "API key that `fibreflow sandbox serve` accepts (E2B-protocol sandbox host).",
}
"""Every environment variable fibreflow reads, with its doc (``.env.example`` lists them)."""
_ENV_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")
_from_dotenv: dict[str, tuple[str, int, str]] = {}  # name -> (file, line, value) put into os.environ


def dotenv_path() -> Path:
    """``$FIBREFLOW_ENV_FILE``, else ``./.env``."""
    return Path(os.environ.get(ENV_FILE_VAR) or ".env")


def read_dotenv(path: Path) -> dict[str, tuple[str, int]]:
    """``KEY=VALUE`` lines of a .env file (``export``, quotes and ``#`` comments allowed) -> value and
    line; ConfigError naming the file and line of a malformed one (never its value)."""
    found: dict[str, tuple[str, int]] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", path=str(path)) from None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _ENV_LINE.match(line)
        if match is None:
            raise ConfigError("expected KEY=VALUE (a name of letters, digits and _, then =)", path=str(path),
                              line=number)
        key, value = match.group(1), match.group(2).strip()
        if value[:1] in ("'", '"'):
            end = value.find(value[0], 1)
            if end < 0:
                raise ConfigError(f"{key}: the quote that opens the value is never closed", path=str(path),
                                  line=number, key=key)
            if value[end + 1:].strip() and not value[end + 1:].strip().startswith("#"):
                raise ConfigError(f"{key}: text after the closing quote", path=str(path), line=number, key=key)
            value = value[1:end]
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0].strip()
        found[key] = (value, number)
    return found


def load_dotenv(path: Path | None = None) -> Path | None:
    """Put the variables of ``path`` (default :func:`dotenv_path`) the environment does not have yet
    into it (an empty value, as ``.env.example`` has, gives nothing); the file read, or None."""
    p = path or dotenv_path()
    if not p.is_file():
        return None
    for key, (value, line) in read_dotenv(p).items():
        if value and key not in os.environ:
            os.environ[key] = value
            _from_dotenv[key] = (str(p), line, value)
    return p


def env_source(name: str) -> str | None:
    """Where variable ``name`` comes from: ``.env:LINE`` (the file's name), ``environment``, or None
    (unset or empty)."""
    if not os.environ.get(name):
        return None
    found = _from_dotenv.get(name)
    if found is not None and found[2] == os.environ[name]:
        return f"{found[0]}:{found[1]}"
    return "environment"


@dataclass(frozen=True)
class SettingSource:
    """One effective setting (or variable), its value and where it came from."""

    key: str
    value: Any
    source: str
    secret: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "value": self.value, "source": self.source, "secret": self.secret}


def _leaves(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterable[tuple[tuple[str, ...], Any]]:
    """(key path, FieldInfo) of every setting, sections descended into, in declaration order."""
    for name, info in model.model_fields.items():
        if info.exclude:
            continue
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            yield from _leaves(kind, (*prefix, name))
        else:
            yield (*prefix, name), info


def _in_file(loaded: LoadedYaml | None, keys: tuple[str, ...]) -> bool:
    node: Any = loaded.data if loaded is not None else None
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def describe_settings(settings: Settings | None = None) -> list[SettingSource]:
    """Every effective setting with its source (``default``, ``FILE:LINE``, ``environment (NAME)``,
    ``.env:LINE (NAME)``), then every variable of ``ENV_VARS``: secrets only as ``set``/``unset``."""
    settings = settings or load_settings()
    loaded = load_yaml(settings.source) if settings.source is not None and settings.source.is_file() else None
    dumped = settings.model_dump(mode="json")
    rows = []
    for keys, _ in _leaves(Settings):
        value: Any = dumped
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if keys == ("db_path",) and os.environ.get("FIBREFLOW_DB"):
            source = f"{env_source('FIBREFLOW_DB') or 'environment'} (FIBREFLOW_DB)"
        elif keys == ("store", "url") and os.environ.get("FIBREFLOW_STORE"):
            source = f"{env_source('FIBREFLOW_STORE') or 'environment'} (FIBREFLOW_STORE)"
        elif _in_file(loaded, keys):
            assert loaded is not None
            source = f"{loaded.path}:{loaded.line_of(keys)}"
        else:
            source = "default"
        rows.append(SettingSource(".".join(keys), value, source))
    for name in ENV_VARS:
        secret = name in SECRET_ENV_VARS
        found = env_source(name)
        shown = ("set" if found else "unset") if secret else os.environ.get(name)
        rows.append(SettingSource(f"${name}", shown, found or "unset", secret))
    return rows


def settings_template() -> str:
    """``fibreflow.yaml`` with every setting at its default, each after a comment with its doc:
    generated from the models, so it lists exactly the settings there are. A default that depends
    on the machine (``state_dir``) is left commented out."""
    import yaml

    out = ["# fibreflow settings: every setting with its default and what it does (generated by `fibreflow init`).",
           "# Keys and tokens never go here: put them in the environment or ./.env (see .env.example).",
           "# Precedence, highest first: the environment, ./.env, this file, the defaults.", ""]

    def render(model: type[BaseModel], instance: BaseModel, depth: int) -> None:
        pad = "  " * depth
        for name, info in model.model_fields.items():
            if info.exclude:
                continue
            value = getattr(instance, name)
            doc = " ".join((info.description or "").split())
            kind = info.annotation
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                out.append(f"{pad}# {doc or (kind.__doc__ or name).strip().splitlines()[0]}")
                out.append(f"{pad}{name}:")
                render(kind, value, depth + 1)
                continue
            plain = value.model_dump(mode="json") if isinstance(value, BaseModel) else (
                {k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v for k, v in value.items()}
                if isinstance(value, dict) else json.loads(json.dumps(value, default=str)))
            text = yaml.safe_dump(plain, default_flow_style=True, width=10_000, sort_keys=False).strip()
            text = text[:-4].strip() if text.endswith("\n...") else text
            out.append(f"{pad}# {doc}")
            machine = info.default_factory is not None and name == "state_dir"
            out.append(f"{pad}{'# ' if machine else ''}{name}: {text}")
        if depth == 0:
            out.append("")

    render(Settings, Settings(), 0)
    return "\n".join(out).rstrip() + "\n"
