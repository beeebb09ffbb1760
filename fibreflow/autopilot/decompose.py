"""Goal -> features with dependencies: one model call with a JSON-schema tool, validated.

The model is shown the goal and an outline of the repository (its files and README) and must
answer by calling ``record_feature_list``, whose input schema is the feature list's. The answer
is validated like a ``feature_list.json`` (ids, unknown dependencies, cycles); an invalid one is
sent back once as an error tool result for the model to correct, then it is an AutopilotError.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fibreflow.autopilot.gitrepo import git
from fibreflow.build.features import Feature, FeatureList
from fibreflow.errors import AutopilotError, ConfigError, RunnerError

if TYPE_CHECKING:
    from fibreflow.models.client import LLMClient

TOOL_NAME = "record_feature_list"
AGENT_NAME = "autopilot-decomposer"
SYSTEM = """\
You plan work for coding agents. Split the goal into the smallest set of features that together \
achieve it, each one a change a single agent can make and test on its own, with the ids of the \
features it builds on as its dependencies (no cycles). Each feature gets a test command that \
passes only once it is done (default: {test_command}). Reply only by calling {tool}."""


def feature_list_tool(*, max_features: int) -> dict[str, Any]:
    """The tool whose input schema is a feature list."""
    item = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
                   "description": "short kebab-case id"},
            "description": {"type": "string", "description": "what the feature does, as a task for an agent"},
            "dependencies": {"type": "array", "items": {"type": "string"},
                             "description": "ids of features this one builds on"},
            "test_command": {"type": "string", "description": "shell command that passes once it is done"},
            "steps": {"type": "array", "items": {"type": "string"}, "description": "optional steps to follow"},
        },
        "required": ["id", "description"],
        "additionalProperties": False,
    }
    return {"name": TOOL_NAME, "description": "Record the features that together achieve the goal.",
            "input_schema": {"type": "object", "properties": {
                "features": {"type": "array", "items": item, "minItems": 1, "maxItems": max_features}},
                "required": ["features"], "additionalProperties": False}}


def repo_outline(repo: Path, commit: str, *, max_files: int = 200, readme_chars: int = 3000) -> str:
    """The files of ``commit`` (at most ``max_files``) and the start of its README."""
    files = git(repo, "ls-tree", "-r", "--name-only", commit).stdout.splitlines()
    parts = ["Files:", *files[:max_files]]
    if len(files) > max_files:
        parts.append(f"... and {len(files) - max_files} more")
    readme = next((f for f in files if f.lower() in ("readme.md", "readme.rst", "readme.txt", "readme")), None)
    if readme:
        text = git(repo, "show", f"{commit}:{readme}").stdout[:readme_chars]
        parts += ["", f"{readme}:", text]
    return "\n".join(parts)


def decompose_goal(goal: str, *, client: LLMClient, outline: str, max_features: int,
                   test_command: str | None = None, tier: str | None = None,
                   run_id: str | None = None) -> tuple[FeatureList, dict[str, Any]]:
    """The features of ``goal`` and the step's detail (tries, model, cost)."""
    from fibreflow.build.features import DEFAULT_TEST_COMMAND

    default_test = test_command or DEFAULT_TEST_COMMAND
    tool = feature_list_tool(max_features=max_features)
    system = SYSTEM.format(test_command=default_test, tool=TOOL_NAME)
    messages: list[dict[str, Any]] = [{"role": "user", "content": f"Goal: {goal}\n\nRepository:\n{outline}"}]
    cost, problem = 0.0, "no reply"
    for attempt in (1, 2):
        message = client.create_message(messages=messages, system=system, tools=[tool], max_tokens=4096,
                                        tool_choice={"type": "tool", "name": TOOL_NAME}, tier=tier,
                                        task_text=f"plan features for: {goal}", agent=AGENT_NAME, run_id=run_id)
        call = client.last_call
        cost += call.cost_usd if call else 0.0
        content = [b.model_dump(mode="json", exclude_none=True) for b in message.content]
        use = next((b for b in content if b.get("type") == "tool_use" and b.get("name") == TOOL_NAME), None)
        if use is None:
            problem = f"the model did not call {TOOL_NAME}"
            reply: Any = f"Error: {problem}. Call {TOOL_NAME} with the feature list."
        else:
            try:
                features = parse_features(use.get("input"), goal=goal, test_command=default_test,
                                          max_features=max_features)
            except (ConfigError, RunnerError) as exc:
                problem = str(exc)
                reply = [{"type": "tool_result", "tool_use_id": use["id"], "is_error": True,
                          "content": f"Invalid feature list: {problem}. Call {TOOL_NAME} again with a fixed list."}]
            else:
                return features, {"source": "model", "tries": attempt, "model": call.model if call else None,
                                  "tier": call.tier if call else None, "cost_usd": round(cost, 6)}
        messages += [{"role": "assistant", "content": content}, {"role": "user", "content": reply}]
    raise AutopilotError(f"the model's feature list for the goal is invalid after 2 tries: {problem}",
                         step="decompose", detail={"source": "model", "tries": 2, "cost_usd": round(cost, 6)})


def parse_features(data: Any, *, goal: str | None, test_command: str, max_features: int) -> FeatureList:
    """Validate a tool input (``{"features": [...]}``) as a feature list."""
    if not isinstance(data, dict) or not isinstance(data.get("features"), list):
        raise ConfigError("the tool input needs a 'features' list", key="features")
    if len(data["features"]) > max_features:
        raise ConfigError(f"{len(data['features'])} features, at most {max_features} allowed", key="features")
    return FeatureList.from_data({"goal": goal, "features": data["features"]}, source="model decomposition",
                                 test_command=test_command)


def feature_dict(feature: Feature) -> dict[str, Any]:
    """A feature as JSON (``FeatureList.from_data`` reads it back)."""
    out: dict[str, Any] = {"id": feature.id, "description": feature.description,
                           "dependencies": list(feature.dependencies), "test_command": feature.test_command}
    if feature.agent:
        out["agent"] = feature.agent
    if feature.tier:
        out["tier"] = feature.tier
    if feature.steps:
        out["steps"] = list(feature.steps)
    if feature.needs_data:
        out["needs_data"] = list(feature.needs_data)
    return out


__all__ = ["AGENT_NAME", "TOOL_NAME", "decompose_goal", "feature_dict", "feature_list_tool", "parse_features",
           "repo_outline"]
