"""The feature list a build works through (the seed's ``feature_list.json``), or a single goal.

The file is a JSON (or YAML) list of features, or an object ``{"goal": ..., "test_command": ...,
"features": [...]}`` whose ``test_command`` is the default for every feature. A feature::

    {"id": "login", "description": "Users can log in", "dependencies": ["db"],
     "test_command": "python -m pytest tests/test_login.py", "agent": "command", "tier": "sonnet"}

Only ``description`` is required; ``id`` defaults to ``feature-N``. ``category``, ``steps``
(shown to the agent), ``passes``, ``notes`` and ``priority`` are accepted as information. Any
other key is an error naming the file, line, feature and field, so a typo is not silently lost.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fibreflow.config import TIERS
from fibreflow.errors import ConfigError, RunnerError

DEFAULT_TEST_COMMAND = "python -m pytest -q"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_FEATURE_KEYS = {"id", "description", "dependencies", "depends_on", "test_command", "agent", "tier"}
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
        done: set[str] = set()
        remaining = list(self.features)
        out: list[Feature] = []
        while remaining:
            ready = [f for f in remaining if all(d in done for d in f.dependencies)]
            if not ready:  # validated at load time; kept as a guard for hand-built lists
                raise RunnerError(f"dependency cycle: {' -> '.join(find_cycle(remaining) or [])}")
            out += ready
            done.update(f.id for f in ready)
            remaining = [f for f in remaining if f.id not in done]
        return out

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
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError("feature list not found", path=str(p)) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the feature list: {exc}", path=str(p)) from None
        lines: Any = None
        if p.suffix.lower() in (".yaml", ".yml"):
            from fibreflow.yamlio import load_yaml

            lines = load_yaml(p)
            data = lines.data
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"malformed JSON: {exc.msg} (column {exc.colno})", path=str(p),
                                  line=exc.lineno) from None
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
        return cls(tuple(features), source=source, goal=goal if isinstance(goal, str) else None)


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
        raise RunnerError(f"dependency cycle in the feature list: {' -> '.join(cycle)}")


def find_cycle(features: Sequence[Feature]) -> list[str] | None:
    """One dependency cycle as ``[a, b, ..., a]``, or None."""
    deps = {f.id: list(f.dependencies) for f in features}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in deps.get(node, []):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep in deps and dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for f in features:
        if f.id not in state:
            found = visit(f.id)
            if found:
                return found
    return None


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
    if p.is_file():
        return FeatureList.load(p, test_command=test_command)
    if p.suffix.lower() in (".json", ".yaml", ".yml") and "\n" not in text and " " not in text:
        raise ConfigError("feature list not found", path=text)
    return FeatureList.from_goal(text, test_command=test_command)


__all__ = ["DEFAULT_TEST_COMMAND", "Feature", "FeatureList", "TIERS", "find_cycle", "load_features"]
