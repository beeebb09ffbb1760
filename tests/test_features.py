"""Feature lists: parsing, dependency order, and errors that name the file, line, feature and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fibreflow.build.features import DEFAULT_TEST_COMMAND, FeatureList, load_features
from fibreflow.errors import ConfigError, RunnerError


def _write(tmp_path: Path, data: object, name: str = "feature_list.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data, indent=2) if not isinstance(data, str) else data)
    return path


def test_parses_features_in_dependency_order(tmp_path: Path) -> None:
    path = _write(tmp_path, {"goal": "a shop", "test_command": "pytest -q", "features": [
        {"id": "checkout", "description": "Pay", "dependencies": ["cart", "users"], "tier": "opus"},
        {"id": "cart", "description": "A cart", "depends_on": ["users"], "test_command": "pytest tests/cart"},
        {"id": "users", "description": "Accounts", "agent": "command", "steps": ["sign up", "log in"],
         "category": "functional", "passes": False},
        {"id": "docs", "description": "Docs"},
    ]})
    fl = FeatureList.load(path)
    assert fl.goal == "a shop" and fl.source == str(path) and len(fl) == 4
    assert [f.id for f in fl.ordered()] == ["users", "docs", "cart", "checkout"]
    checkout, cart, users = fl.get("checkout"), fl.get("cart"), fl.get("users")
    assert checkout.dependencies == ("cart", "users") and checkout.tier == "opus"
    assert checkout.test_command == "pytest -q" and cart.test_command == "pytest tests/cart"
    assert users.agent == "command" and "1. sign up\n2. log in" in users.task_description()


def test_a_plain_list_and_default_ids(tmp_path: Path) -> None:
    fl = FeatureList.load(_write(tmp_path, [{"description": "one"}, {"description": "two"}]))
    assert [f.id for f in fl] == ["feature-1", "feature-2"]
    assert all(f.test_command == DEFAULT_TEST_COMMAND for f in fl)


def test_a_goal_becomes_one_feature(tmp_path: Path) -> None:
    fl = load_features("Add a --version flag to the CLI", test_command="pytest -q tests/test_cli.py")
    assert [(f.id, f.description, f.test_command) for f in fl] == [
        ("goal", "Add a --version flag to the CLI", "pytest -q tests/test_cli.py")]
    assert fl.goal == "Add a --version flag to the CLI"
    assert load_features(_write(tmp_path, [{"description": "x"}])).get("feature-1")
    with pytest.raises(ConfigError, match="not found"):
        load_features(str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match="goal is empty"):
        load_features("   ")


@pytest.mark.parametrize("features, message, line", [
    ([{"id": "a"}], r"feature #1 \('a'\): field 'description' must be a non-empty string", 2),
    ([{"id": "a", "description": "x", "dependencies": "b"}],
     r"feature #1 \('a'\): field 'dependencies' must be a list of strings", 5),
    ([{"id": "a", "description": "x", "tier": "gpt"}], r"field 'tier' must be one of haiku, sonnet, opus", 5),
    ([{"id": "a", "description": "x", "dependecies": []}], r"unknown field 'dependecies'", 5),
    ([{"id": "a", "description": "x"}, {"id": "a", "description": "y"}], r"feature #2: duplicate id 'a'", 7),
    ([{"id": "a", "description": "x", "dependencies": ["ghost"]}], r"unknown dependency 'ghost'", 2),
    ([{"id": "bad id", "description": "x"}], r"field 'id' must be letters", 3),
    (["just text"], r"feature #1 must be an object", 2),
])
def test_errors_name_file_line_feature_and_field(tmp_path: Path, features: list, message: str,
                                                 line: int) -> None:
    path = _write(tmp_path, features)
    with pytest.raises(ConfigError, match=message) as info:
        FeatureList.load(path)
    assert info.value.path == str(path) and info.value.line == line
    assert str(info.value).startswith(f"{path}:{line}: ")


def test_malformed_json_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, '[\n  {"id": "a",\n   "description": "x",,}\n]')
    with pytest.raises(ConfigError, match="malformed JSON") as info:
        FeatureList.load(path)
    assert info.value.line == 3


def test_dependency_cycle_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, [{"id": "a", "description": "x", "dependencies": ["c"]},
                             {"id": "b", "description": "y", "dependencies": ["a"]},
                             {"id": "c", "description": "z", "dependencies": ["b"]},
                             {"id": "d", "description": "w", "dependencies": ["d"]}])
    with pytest.raises(RunnerError, match=r"dependency cycle in the feature list: a -> c -> b -> a"):
        FeatureList.load(path)
    with pytest.raises(RunnerError, match=r"d -> d"):
        FeatureList.from_data([{"id": "d", "description": "w", "dependencies": ["d"]}])


def test_yaml_feature_lists_work_too(tmp_path: Path) -> None:
    path = _write(tmp_path, "features:\n  - id: a\n    description: first\n  - id: b\n    description: 7\n",
                  "features.yaml")
    with pytest.raises(ConfigError, match=r"feature #2 \('b'\): field 'description'") as info:
        FeatureList.load(path)
    assert info.value.line == 5


def _chain(n: int) -> list[dict[str, object]]:
    return [{"id": f"f{i}", "description": f"step {i}", "dependencies": [f"f{i - 1}"] if i else []}
            for i in range(n)]


def test_a_3000_feature_chain_loads_in_order_and_a_cycle_in_it_is_named(tmp_path: Path) -> None:
    fl = FeatureList.load(_write(tmp_path, _chain(3000)))
    assert len(fl) == 3000
    assert [f.id for f in fl.ordered()] == [f"f{i}" for i in range(3000)]
    looped = _chain(3000)
    looped[0]["dependencies"] = ["f2999"]  # f0 -> f2999 -> f2998 -> ... -> f1 -> f0
    with pytest.raises(RunnerError, match=r"dependency cycle in the feature list: f0 -> f2999 -> f2998 -> .*"
                                          r"\(2985 more\).* -> f1 -> f0$"):
        FeatureList.load(_write(tmp_path, looped, "looped.json"))


def test_over_deep_json_is_a_usage_error_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fibreflow.cli import main

    deep = _write(tmp_path, '{"features": [{"description": "x", "notes": ' + "[" * 5000 + "]" * 5000 + "}]}")
    with pytest.raises(ConfigError, match="nested more than 100 levels deep") as info:
        FeatureList.load(deep)
    assert info.value.path == str(deep)
    code = main(["build", str(deep), "--repo", str(tmp_path), "--agent-command", "true"])
    err = capsys.readouterr().err
    assert code == 2 and f"{deep}: malformed JSON: nested more than 100 levels deep" in err
    assert "Traceback" not in err


def test_a_goal_longer_than_a_file_name_is_a_goal() -> None:
    goal = "Add a --version flag to the CLI that prints the package version and exits 0. " * 5
    assert len(goal) > 255 and "/" not in goal
    assert load_features(goal).goal == goal.strip()


def test_needs_data_and_a_logical_agent_are_read_and_checked(tmp_path: Path) -> None:
    from fibreflow.build.tiers import check_agents

    path = _write(tmp_path, [{"id": "a", "description": "x", "needs_data": ["orders_fresh"], "agent": "vps-monitor"},
                             {"id": "b", "description": "y", "agent": "ghost-bot"}])
    fl = FeatureList.load(path)
    assert fl.get("a").needs_data == ("orders_fresh",) and fl.get("a").agent == "vps-monitor"
    with pytest.raises(ConfigError, match="feature 'b': field 'agent': 'ghost-bot' is neither an agent") as err:
        check_agents(fl, {"vps-monitor"})
    assert (err.value.path, err.value.key) == (str(path), "features.1.agent")
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "ghost-bot" in text)
    assert err.value.line == line
    bad = _write(tmp_path, [{"id": "a", "description": "x", "needs_data": "orders_fresh"}])
    with pytest.raises(ConfigError, match="field 'needs_data' must be a list of strings"):
        FeatureList.load(bad)
