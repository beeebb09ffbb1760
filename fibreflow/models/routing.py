"""Tiered model routing: every request goes to the cheapest tier that can do it.

Haiku takes reads, checks, listings, status and health pings; Sonnet takes generating,
writing, analysing, testing, debugging and code changes; Opus takes architecture, design,
critical decisions and production deployments. Patterns match whole words (and their
inflections), never substrings: "catalog" holds neither "cat" nor "log", "shipping" is not
"ping". A pattern "a+b" needs both words anywhere ("deploy ... to production").

Scoring: each matched pattern adds its tier's weight (the leading verb counts more); a short
task (< ``models.short_task_chars``) or a question adds to Haiku; the highest score wins,
ties going to the stronger tier; no match at all means Sonnet. Patterns are precompiled into
dicts, so a request costs one tokenisation and a few lookups per word (microseconds).

Order of precedence: an explicit model ID or tier (an override), then the agent's rule from
config, then the text. ``resolve_override`` turns ``--model TIER|MODEL_ID`` into a tier and a
model, refusing what is neither a tier nor a model of the pricing file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fibreflow.config import TIERS, Settings, load_settings
from fibreflow.errors import ConfigError

if TYPE_CHECKING:
    from fibreflow.models.pricing import Pricing

# weight of one match per tier: a stronger tier needs fewer words to win
_WEIGHT = {"haiku": 1.0, "sonnet": 1.5, "opus": 2.5}
_SHORT_BONUS = 1.0
_LEAD_BONUS = 1.5  # the leading verb names the task: "Show the slowest queries" is a read
_QUESTION_BONUS = 1.5  # "Is X up?", "How many Y?" are lookups; "why" questions are debugging
_QUESTION_WORDS = frozenset({"is", "are", "does", "do", "did", "has", "have", "was", "were", "can",
                             "which", "what", "when", "where", "who", "how"})

PATTERNS: dict[str, tuple[str, ...]] = {
    "haiku": (
        "read", "check", "list", "status", "health", "ping", "exist", "existence", "show", "get",
        "fetch", "view", "print", "count", "uptime", "disk space", "disk usage", "whoami", "ls", "cat",
        "tail", "head", "grep", "find", "lookup", "look up", "verify", "confirm", "is running", "is up",
        "version", "log", "display", "report", "summarize", "summary", "quick", "simple", "trivial",
        "inspect", "echo", "sync status", "last run", "how many", "which", "where is", "what is",
        "memory usage", "cpu", "latency", "heartbeat", "queue depth", "tell me",
    ),
    "sonnet": (
        "generate", "write", "implement", "create", "build", "add", "analyze", "analyse", "analysis",
        "test", "unit test", "deploy", "release", "debug", "fix", "bug", "refactor", "code", "function", "class",
        "endpoint", "script", "update", "change", "modify", "rewrite", "optimize", "investigate",
        "diagnose", "troubleshoot", "explain", "review", "document", "documentation", "migrate",
        "convert", "parse", "validate", "feature", "pull request", "patch", "error handling", "retry",
        "integrate", "integration", "pipeline", "query", "regex", "compare", "root cause", "stack trace",
        "traceback", "failing", "broken", "crash", "draft", "extend", "improve",
    ),
    "opus": (
        "architecture", "architect", "design", "redesign", "critical", "strategy", "trade off",
        "tradeoff", "decide", "decision", "roadmap", "security audit", "threat model",
        "disaster recovery", "scalability", "multi region", "re architect", "overhaul", "system design",
        "data model", "schema design", "capacity planning", "postmortem", "post mortem",
        "incident review", "regulatory", "vendor selection", "evaluate options", "long term",
        "mission critical", "high stakes", "irreversible", "failover plan", "rollback plan",
        "migration plan", "cutover", "go live",
        # production changes: both words anywhere in the task
        "deploy+production", "deploy+prod", "release+production", "rollout+production",
        "roll+production", "promote+production", "push+production", "ship+production",
        "migrate+production", "migration+production", "rollback+production", "upgrade+production",
        "zero downtime",
    ),
}


@dataclass(frozen=True)
class RouteDecision:
    """Where a request goes and why."""

    tier: str
    model_id: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        """The ``fibreflow route --json`` object."""
        return {"tier": self.tier, "model_id": self.model_id, "reason": self.reason}


_WORD = re.compile(r"[a-z0-9]+")
# identifiers (paths, hosts, snake_case, dotted names) are one token, not words: a branch
# called fix_sync or a file config.yaml says nothing about the task
_TOKEN = re.compile(r"[a-z0-9]+(?:[._/:@][a-z0-9]+)+|[a-z0-9]+")


def _forms(word: str) -> set[str]:
    """A word and its common inflections (check, checks, checked, checking; fix, fixes...)."""
    forms = {word, word + "s", word + "es", word + "ed", word + "ing"}
    if word.endswith("e"):
        forms |= {word + "d", word[:-1] + "ing"}
    if word.endswith("y") and len(word) > 2 and word[-2] not in "aeiou":
        forms |= {word[:-1] + "ies", word[:-1] + "ied"}
    if len(word) >= 3 and word[-1] in "gpt" and word[-2] in "aeiou" and word[-3] not in "aeiou":
        forms |= {word + word[-1] + "ed", word + word[-1] + "ing"}  # debug -> debugging
    return forms


def _compile() -> tuple[dict[str, str], dict[tuple[str, ...], tuple[str, str]], int,
                        list[tuple[tuple[str, ...], str, str]]]:
    to_base: dict[str, str] = {}
    table: dict[tuple[str, ...], tuple[str, str]] = {}
    combos: list[tuple[tuple[str, ...], str, str]] = []
    longest = 1
    for tier, patterns in PATTERNS.items():
        for pattern in patterns:
            words = tuple(w for part in pattern.split("+") for w in _WORD.findall(part))
            for w in words:
                for form in _forms(w):
                    to_base.setdefault(form, w)
            if "+" in pattern:
                combos.append((words, tier, pattern))
            else:
                table.setdefault(words, (tier, pattern))
                longest = max(longest, len(words))
    for words in [*table, *(c[0] for c in combos)]:
        for w in words:  # a pattern word is always its own base, whatever else inflects to it
            to_base[w] = w
    return to_base, table, longest, combos


_TO_BASE, _TABLE, _LONGEST, _COMBOS = _compile()


class ModelRouter:
    """Classifies requests into tiers and maps tiers to the configured model IDs."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self.tiers = dict(self.settings.models.tiers)
        self.agent_rules = dict(self.settings.models.agent_rules)
        self.short_task_chars = self.settings.models.short_task_chars

    def get_model_id(self, tier: str) -> str:
        """The model ID configured for ``tier``."""
        if tier not in self.tiers:
            raise ConfigError(f"unknown tier '{tier}' (known: {', '.join(TIERS)})", key="models.tiers")
        return self.tiers[tier]

    def classify_request(self, task: str, agent: str | None = None, *, tier: str | None = None,
                         model_id: str | None = None) -> RouteDecision:
        """Pick the tier for ``task``: explicit ``model_id`` or ``tier`` > the agent's rule > the words
        of the task. A ``model_id`` is sent as it is; its tier is ``tier``, else the tier configured
        with that ID, else the tier its name contains (``sonnet`` when none)."""
        if model_id is not None:
            chosen = tier or self.tier_of(model_id)
            return RouteDecision(chosen, model_id, f"explicit override: model {model_id}")
        if tier is not None:
            return RouteDecision(tier, self.get_model_id(tier), f"explicit override: {tier}")
        if agent is not None and agent in self.agent_rules:
            ruled = self.agent_rules[agent]
            return RouteDecision(ruled, self.get_model_id(ruled), f"agent rule: {agent} -> {ruled}")
        chosen, reason = self._classify_text(task or "")
        return RouteDecision(chosen, self.get_model_id(chosen), reason)

    def tier_of(self, model_id: str) -> str:
        """The tier a model ID belongs to: the configured tier with that ID, else the tier named in
        the ID (``claude-opus-...`` is opus), else sonnet."""
        for tier, configured in self.tiers.items():
            if configured == model_id:
                return tier
        return next((t for t in TIERS if t in model_id.lower()), "sonnet")

    def resolve_override(self, value: str, *, pricing: Pricing, option: str = "--model") -> RouteDecision:
        """``--model TIER|MODEL_ID`` as a decision with reason ``override``; anything that is neither
        a tier nor a model ID of the pricing file is a ConfigError naming ``option``."""
        if value in TIERS:
            return RouteDecision(value, self.get_model_id(value), "override")
        if pricing.knows(value):
            return RouteDecision(self.tier_of(value), value, "override")
        where = f" in {pricing.path}" if pricing.path else ""
        raise ConfigError(f"{option} {value!r} is neither a tier ({', '.join(TIERS)}) nor a model ID priced"
                          f"{where} (known: {', '.join(sorted(pricing.models))})", key=option)

    def _classify_text(self, task: str) -> tuple[str, str]:
        text = task.lower()
        words = [_TO_BASE.get(w, w) for w in _TOKEN.findall(text)]
        scores = dict.fromkeys(TIERS, 0.0)
        hits: dict[str, list[str]] = {t: [] for t in TIERS}
        n = len(words)
        lead = i = 1 if words[:1] == ["please"] else 0
        while i < n:
            step = 1
            for size in range(min(_LONGEST, n - i), 0, -1):
                found = _TABLE.get(tuple(words[i:i + size]))
                if found is not None:
                    t, pattern = found
                    if pattern not in hits[t]:
                        scores[t] += _WEIGHT[t] + (_LEAD_BONUS if i == lead else 0.0)
                        hits[t].append(pattern)
                    step = size  # longest match first: "unit test" is not also "test"
                    break
            i += step
        if _COMBOS:
            present = set(words)
            for needed, t, pattern in _COMBOS:
                if pattern not in hits[t] and all(w in present for w in needed):
                    scores[t] += _WEIGHT[t] + (_LEAD_BONUS if lead < n and words[lead] in needed else 0.0)
                    hits[t].append(pattern)
        short = len(task.strip()) < self.short_task_chars
        if short:
            scores["haiku"] += _SHORT_BONUS
        question = bool(words) and (words[0] in _QUESTION_WORDS or text.rstrip().endswith("?")) \
            and words[0] != "why"
        if question:
            scores["haiku"] += _QUESTION_BONUS
        best = max(scores.values())
        if best == 0:
            return ("sonnet", "no pattern matched; sonnet is the default for substantial work")
        # ties go to the stronger tier: under-powering a task costs a failed attempt
        chosen = next(t for t in reversed(TIERS) if scores[t] == best)
        signals = [s for s, on in ((f"short task (< {self.short_task_chars} chars)", short),
                                   ("a question", question)) if on]
        if not hits[chosen]:
            return (chosen, f"{' and '.join(signals)} with no stronger signal")
        reason = f"matched {chosen} patterns " + ", ".join(f"'{p}'" for p in hits[chosen][:4])
        if chosen == "haiku" and signals:
            reason += "; " + ", ".join(signals)
        return (chosen, reason)
