"""The feature list a build works through (the seed's ``feature_list.json``), or a single goal.

The file is a JSON (or YAML) list of features, or an object ``{"goal": ..., "test_command": ...,
"features": [...]}`` whose ``test_command`` is the default for every feature. A feature::

    {"id": "login", "description": "Users can log in", "dependencies": ["db"],
     "test_command": "python -m pytest tests/test_login.py", "agent": "command", "tier": "sonnet",
     "needs_data": ["orders_fresh"]}

Only ``description`` is required; ``id`` defaults to ``feature-N``. ``agent`` names an agent
implementation (``claude``, ``command``) or a logical agent whose rule in ``models.agent_rules``
picks the tier (``build.tiers``); ``needs_data`` names SLAs whose data must be fresh before the
feature's attempts start (the build's data gate). ``category``, ``steps``
(shown to the agent), ``passes``, ``notes`` and ``priority`` are accepted as information. Any
other key is an error naming the file, line, feature and field, so a typo is not silently lost.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fibreflow.config import TIERS
from fibreflow.errors import ConfigError, RunnerError

DEFAULT_TEST_COMMAND = "python -m pytest -q"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_FEATURE_KEYS = {"id", "description", "dependencies", "depends_on", "test_command", "agent", "tier", "needs_data"}
_INFO_KEYS = {"category", "steps", "passes", "notes", "priority"}
_TOP_KEYS = {"goal", "test_command", "features"}


@dataclass(frozen=True)
class Feature:
    """One unit of work: what to build, what it needs first, and how to check it."""

    id: str
    description: str
    dependencies: tuple[str, ...] = ()
    test_command: str = DEFAULT_TEST_COMMAND
    agent: str | None = None
    tier: str | None = None
    steps: tuple[str, ...] = ()
    needs_data: tuple[str, ...] = ()

    def task_description(self) -> str:
        """The description with its steps, as an agent is given it."""
        if not self.steps:
            return self.description
        return self.description + "\n\nSteps:\n" + "\n".join(f"{i}. {s}" for i, s in enumerate(self.steps, 1))


@dataclass(frozen=True)
class FeatureList:
    """Features in file order; ``ordered()`` gives them in dependency order."""

    features: tuple[Feature, ...]
    source: str | None = None
    goal: str | None = None
    lines: Any = field(default=None, compare=False, repr=False)
    """Where each key was in the file (a ``LoadedYaml``), for errors found after loading."""
    prefix: tuple[Any, ...] = field(default=(), compare=False, repr=False)

    def line_of(self, index: int, key: str) -> int | None:
        """The file's line of feature ``index``'s ``key`` (None when not known)."""
        return self.lines.line_of([*self.prefix, index, key]) if self.lines is not None else None

    def replace_features(self, features: Sequence[Feature]) -> FeatureList:
        """The same list (source, goal, line index) with other features."""
        return FeatureList(tuple(features), source=self.source, goal=self.goal, lines=self.lines, prefix=self.prefix)

    def __iter__(self) -> Iterator[Feature]:
        return iter(self.features)

    def __len__(self) -> int:
        return len(self.features)

    def get(self, feature_id: str) -> Feature:
        """The feature called ``feature_id``."""
        for feature in self.features:
            if feature.id == feature_id:
                return feature
        raise KeyError(feature_id)

    def ordered(self) -> list[Feature]:
        """Every feature after all of its dependencies; ties keep file order."""
        # a feature's round is one after its latest dependency's (Kahn's algorithm: linear, no recursion)
        deps = {f.id: set(f.dependencies) for f in self.features}
        waiting = {fid: len(ds) for fid, ds in deps.items()}
        dependents: dict[str, list[str]] = {}
        for fid, ds in deps.items():
            for dep in ds:
                dependents.setdefault(dep, []).append(fid)
        level = dict.fromkeys((fid for fid, n in waiting.items() if n == 0), 0)
        ready = list(level)
        while ready:
            fid = ready.pop()
            for child in dependents.get(fid, ()):
                waiting[child] -= 1
                if waiting[child] == 0:
                    level[child] = 1 + max(level[d] for d in deps[child])
                    ready.append(child)
        if len(level) < len(deps):  # validated at load time; kept as a guard for hand-built lists
            remaining = [f for f in self.features if f.id not in level]
            raise RunnerError(f"dependency cycle: {_describe_cycle(find_cycle(remaining) or [])}")
        position = {id(f): i for i, f in enumerate(self.features)}
        return sorted(self.features, key=lambda f: (level[f.id], position[id(f)]))

    @classmethod
    def from_goal(cls, goal: str, *, test_command: str | None = None) -> FeatureList:
        """One feature, ``goal``, checked by ``test_command`` (default: the repo's pytest suite)."""
        if not goal.strip():
            raise ConfigError("the goal is empty: give a feature_list.json or a goal text")
        return cls((Feature("goal", goal.strip(), test_command=test_command or DEFAULT_TEST_COMMAND),),
                   goal=goal.strip())

    @classmethod
    def load(cls, path: str | Path, *, test_command: str | None = None) -> FeatureList:
        """Parse a feature list file; every error names the file, line, feature and field."""
        from fibreflow.yamlio import MAX_DEPTH, load_yaml, read_text

        p = Path(path)
        text = read_text(p, what="feature list")  # bounded size, UTF-8, errors name the file
        lines: Any = None
        if p.suffix.lower() in (".yaml", ".yml"):
            lines = load_yaml(p)
            data = lines.data
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"malformed JSON: {exc.msg} (column {exc.colno})", path=str(p),
                                  line=exc.lineno) from None
            except RecursionError:
                raise ConfigError(f"malformed JSON: nested more than {MAX_DEPTH} levels deep", path=str(p)) from None
            except ValueError as exc:  # e.g. an integer of more digits than Python converts
                raise ConfigError(f"malformed JSON: {exc}", path=str(p)) from None
            if _depth_exceeds(data, MAX_DEPTH):
                raise ConfigError(f"malformed JSON: nested more than {MAX_DEPTH} levels deep", path=str(p))
            lines = _line_index(p)
        return cls.from_data(data, source=str(p), lines=lines, test_command=test_command)

    @classmethod
    def from_data(cls, data: Any, *, source: str | None = None, lines: Any = None,
                  test_command: str | None = None) -> FeatureList:
        """Build from parsed JSON; ``lines`` (a ``LoadedYaml``) lets errors name the line."""
        def fail(message: str, keys: Sequence[Any] = ()) -> ConfigError:
            line = lines.line_of(keys) if lines is not None and keys else None
            return ConfigError(message, path=source, line=line, key=".".join(map(str, keys)) or None)

        goal = None
        prefix: tuple[Any, ...] = ()
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - _TOP_KEYS)
            if unknown:
                raise fail(f"unknown key {unknown[0]!r} (known: {', '.join(sorted(_TOP_KEYS))})", [unknown[0]])
            goal = data.get("goal")
            default = data.get("test_command")
            if default is not None and (not isinstance(default, str) or not default.strip()):
                raise fail("'test_command' must be a non-empty string", ["test_command"])
            test_command = test_command or default
            if "features" not in data:
                if isinstance(goal, str):
                    return cls.from_goal(goal, test_command=test_command)
                raise fail("needs a 'features' list (or a 'goal')")
            data, prefix = data["features"], ("features",)
        if not isinstance(data, list) or not data:
            raise fail("the feature list must be a non-empty JSON list of features", prefix)
        features = [_parse_feature(item, i, prefix, fail, test_command) for i, item in enumerate(data)]
        _check_graph(features, prefix, fail)
        return cls(tuple(features), source=source, goal=goal if isinstance(goal, str) else None, lines=lines,
                   prefix=prefix)


def _parse_feature(item: Any, index: int, prefix: tuple[Any, ...], fail: Any,
                   test_command: str | None) -> Feature:
    keys = (*prefix, index)
    if not isinstance(item, Mapping):
        raise fail(f"feature #{index + 1} must be an object with at least a 'description'", keys)
    fid = item.get("id", f"feature-{index + 1}")
    where = f"feature #{index + 1} ({fid!r})" if "id" in item else f"feature #{index + 1}"
    if not isinstance(fid, str) or not _ID.match(fid):
        raise fail(f"{where}: field 'id' must be letters, digits, '.', '_' or '-' (at most 100)", [*keys, "id"])
    unknown = sorted(set(item) - _FEATURE_KEYS - _INFO_KEYS)
    if unknown:
        raise fail(f"{where}: unknown field {unknown[0]!r} (known: {', '.join(sorted(_FEATURE_KEYS))})",
                   [*keys, unknown[0]])
    if "dependencies" in item and "depends_on" in item:
        raise fail(f"{where}: give 'dependencies' or 'depends_on', not both", [*keys, "depends_on"])

    def text(field: str, *, required: bool = False) -> str | None:
        value = item.get(field)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip():
            raise fail(f"{where}: field {field!r} must be a non-empty string", [*keys, field])
        return value.strip()

    def strings(field: str) -> tuple[str, ...]:
        value = item.get(field, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise fail(f"{where}: field {field!r} must be a list of strings", [*keys, field])
        return tuple(value)

    dep_field = "depends_on" if "depends_on" in item else "dependencies"
    tier = text("tier")
    if tier is not None and tier not in TIERS:
        raise fail(f"{where}: field 'tier' must be one of {', '.join(TIERS)}, not {tier!r}", [*keys, "tier"])
    return Feature(
        id=fid,
        description=text("description", required=True) or "",
        dependencies=strings(dep_field),
        test_command=text("test_command") or test_command or DEFAULT_TEST_COMMAND,
        agent=text("agent"),
        tier=tier,
        steps=strings("steps"),
        needs_data=strings("needs_data"),
    )


def _check_graph(features: list[Feature], prefix: tuple[Any, ...], fail: Any) -> None:
    seen: dict[str, int] = {}
    for i, f in enumerate(features):
        if f.id in seen:
            raise fail(f"feature #{i + 1}: duplicate id {f.id!r} (also feature #{seen[f.id] + 1})",
                       [*prefix, i, "id"])
        seen[f.id] = i
    for i, f in enumerate(features):
        for dep in f.dependencies:
            if dep not in seen:
                raise fail(f"feature #{i + 1} ({f.id!r}): unknown dependency {dep!r}", [*prefix, i])
    cycle = find_cycle(features)
    if cycle:
        raise RunnerError(f"dependency cycle in the feature list: {_describe_cycle(cycle)}")


def _describe_cycle(cycle: Sequence[str], *, show: int = 8) -> str:
    """``a -> b -> a``; a long cycle shows its first and last ``show`` steps and how many lie between."""
    if len(cycle) <= 2 * show + 1:
        return " -> ".join(cycle)
    hidden = len(cycle) - 2 * show
    return " -> ".join([*cycle[:show], f"... ({hidden} more)", *cycle[-show:]])


def find_cycle(features: Sequence[Feature]) -> list[str] | None:
    """One dependency cycle as ``[a, b, ..., a]``, or None. Iterative: a chain of any length is fine."""
    deps = {f.id: list(f.dependencies) for f in features}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    for f in features:
        if f.id in state:
            continue
        state[f.id] = 1
        path = [f.id]
        pending = [iter(deps[f.id])]  # per node on the path: the dependencies still to visit
        while pending:
            dep = next(pending[-1], None)
            if dep is None:
                state[path.pop()] = 2
                pending.pop()
            elif state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            elif dep in deps and dep not in state:
                state[dep] = 1
                path.append(dep)
                pending.append(iter(deps[dep]))
    return None


def _depth_exceeds(data: Any, limit: int) -> bool:
    """Whether lists and objects in ``data`` nest more than ``limit`` levels (iteratively)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return False


def _line_index(path: Path) -> Any:
    """Line numbers of a JSON file's keys (JSON is YAML); None when YAML cannot read it."""
    from fibreflow.yamlio import load_yaml

    try:
        return load_yaml(path)
    except ConfigError:
        return None


def load_features(spec: str | Path, *, test_command: str | None = None) -> FeatureList:
    """A feature list file, or a goal text when ``spec`` names no file."""
    text = str(spec)
    p = Path(text)
    try:
        is_file = p.is_file()
    except OSError:  # e.g. a goal longer than a file name may be: it is a goal, not a file
        is_file = False
    if is_file:
        return FeatureList.load(p, test_command=test_command)
    if p.suffix.lower() in (".json", ".yaml", ".yml") and "\n" not in text and " " not in text:
        raise ConfigError("feature list not found", path=text)
    return FeatureList.from_goal(text, test_command=test_command)


__all__ = ["DEFAULT_TEST_COMMAND", "Feature", "FeatureList", "TIERS", "find_cycle", "load_features"]
