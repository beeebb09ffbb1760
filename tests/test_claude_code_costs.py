"""``fibreflow cost analyze --claude-code``: Claude Code transcripts priced, each response once.

The fixture (tests/fixtures/claude_code/projects) holds every duplicate shape: a streamed
response written twice with growing ``output_tokens`` (msg_A1), a subagent file repeating a main
session line (msg_A2) and repeating one without its ``requestId`` (msg_A1 again), a response
without ``requestId`` written twice (msg_A3), a ``<synthetic>`` line, a line that is not JSON
and an assistant line without usage. The expected dollars below were worked out by hand from
data/pricing.yaml (dollars per million tokens):

  sonnet-4-5 in 3 out 15 w5m 3.75 w1h 6 read 0.30; haiku-4-5 in 1 out 5 read 0.10;
  opus-4-5 in 5 out 25 w5m 6.25 read 0.50; tiers: haiku-5-5 in 0.10 out 0.50 read 0.01,
  sonnet-5-5 in 2 out 10 w5m 2.5 w1h 4 read 0.10, opus-5-5 in 4 out 20 w5m 5 read 0.20.

  msg_A1 sonnet-4-5 in 10, out 300 (the fuller copy), write 2000 (5m); prompt routes to sonnet
         current 30+4500+7500 = 12030; routed = all-Sonnet 20+3000+5000 = 8020
  msg_A2 sonnet-4-5 in 5, out 120, write 400 (5m) + 600 (1h), read 2000; sonnet
         current 15+1800+1500+3600+600 = 7515; routed = all-Sonnet 10+1200+1000+2400+200 = 4810
  msg_A3 haiku-4-5 in 50, out 40; the main session's prompt routes it to sonnet
         current 50+200 = 250; routed = all-Sonnet 100+400 = 500
  msg_A4 haiku-4-5 in 200, out 50, read 1000; the subagent's prompt "list files" routes to haiku
         current 200+250+100 = 550; routed 20+25+10 = 55; all-Sonnet 400+500+100 = 1000
  msg_B1 opus-4-5 in 100, out 500, write 3000 (no split: 5m), read 10000; routes to opus
         current 500+12500+18750+5000 = 36750; routed 400+10000+15000+2000 = 27400;
         all-Sonnet 200+5000+7500+1000 = 13700
  (all in millionths of a dollar)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import fibreflow.cli as cli
from fibreflow.costs.analysis import analyze_costs
from fibreflow.models.pricing import Pricing, resolve_path

FIXTURE = Path(__file__).parent / "fixtures" / "claude_code" / "projects"
NOW = "2025-12-01T00:00:00+00:00"
M = 1e-6
CURRENT = (12030 + 7515 + 250 + 550 + 36750) * M  # 0.057095
ROUTED = (8020 + 4810 + 500 + 55 + 27400) * M  # 0.040785
ALL_SONNET = (8020 + 4810 + 500 + 1000 + 13700) * M  # 0.028030
SONNET_45, HAIKU_45, OPUS_45 = "claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001", "claude-opus-4-5-20251101"
CONTENT = ("Write a function", "list files", "Design the architecture", "(reply text)", "tool_result")


def close(value: float, expected: float) -> bool:
    return abs(value - expected) <= 0.001 * expected


@pytest.fixture
def pricing() -> Pricing:
    return Pricing.load(resolve_path("data/pricing.yaml"))


def test_transcripts_count_each_response_once_and_match_the_hand_totals(pricing: Pricing) -> None:
    r = analyze_costs(None, days=30, now=NOW, pricing=pricing, claude_code=FIXTURE).to_dict()
    assert r["calls"] == 5
    assert close(r["current_cost"], CURRENT) and close(r["routed_cost"], ROUTED)
    assert close(r["all_sonnet_cost"], ALL_SONNET)
    assert r["transcripts"] == {"files": 3, "responses": 5, "duplicates": 4, "synthetic": 1}
    by_model = {m: (row["calls"], row["current_cost"]) for m, row in r["by_model"].items()}
    assert by_model.keys() == {SONNET_45, HAIKU_45, OPUS_45}
    assert by_model[SONNET_45][0] == 2 and close(by_model[SONNET_45][1], (12030 + 7515) * M)
    assert by_model[HAIKU_45][0] == 2 and close(by_model[HAIKU_45][1], (250 + 550) * M)
    assert by_model[OPUS_45][0] == 1 and close(by_model[OPUS_45][1], 36750 * M)
    assert r["by_day"].keys() == {"2025-11-20", "2025-11-21"}
    assert close(r["by_day"]["2025-11-20"]["current_cost"], (12030 + 7515 + 250 + 550) * M)
    assert close(r["by_day"]["2025-11-21"]["all_sonnet_cost"], 13700 * M)
    assert r["by_project"].keys() == {"-home-dev-shop", "-home-dev-infra"}
    assert close(r["by_project"]["-home-dev-shop"]["routed_cost"], (8020 + 4810 + 500 + 55) * M)
    assert close(r["by_project"]["-home-dev-infra"]["routed_cost"], 27400 * M)
    assert {t: row["calls"] for t, row in r["by_tier"].items()} == {"sonnet": 3, "haiku": 1, "opus": 1}
    s1 = str(FIXTURE / "-home-dev-shop" / "s1.jsonl")
    assert [(m["file"], m["line"]) for m in r["malformed_lines"]] == [(s1, 8), (s1, 9)]
    assert "JSON" in r["malformed_lines"][0]["error"] and "usage" in r["malformed_lines"][1]["error"]
    assert not any(text in json.dumps(r) for text in CONTENT)


def test_the_fuller_copy_wins_whatever_order_the_copies_come_in(tmp_path: Path, pricing: Pricing) -> None:
    # one project directory given directly; the streamed copies of msg_A1 in reverse order
    project = tmp_path / "shop"
    shutil.copytree(FIXTURE / "-home-dev-shop", project)
    main = project / "s1.jsonl"
    lines = main.read_text().splitlines()
    lines[2], lines[3] = lines[3], lines[2]
    main.write_text("\n".join(lines) + "\n")
    r = analyze_costs(None, days=30, now=NOW, pricing=pricing, claude_code=project).to_dict()
    assert r["calls"] == 4 and set(r["by_project"]) == {"shop"}
    assert close(r["current_cost"], (12030 + 7515 + 250 + 550) * M)


def test_cli_reads_the_default_directory_and_prints_no_content(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("fibreflow.cli.cost",))
    home = tmp_path / "home"
    shutil.copytree(FIXTURE, home / ".claude" / "projects")
    monkeypatch.setenv("HOME", str(home))
    assert cli.main(["cost", "analyze", "--claude-code", "--days", "36500", "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["calls"] == 5 and close(out["current_cost"], CURRENT) and close(out["routed_cost"], ROUTED)
    assert out["sources"] == [str(home / ".claude" / "projects")] and out["malformed_count"] == 2
    assert cli.main(["cost", "analyze", "--claude-code", str(FIXTURE), "--days", "36500"]) == 0
    text = capsys.readouterr().out
    assert "by project:" in text and "-home-dev-infra" in text and f"{SONNET_45}" in text
    assert "s1.jsonl:8" in text
    for shown in (captured.out, captured.err, text):
        assert not any(content in shown for content in CONTENT)


def test_a_missing_transcript_directory_is_a_usage_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("fibreflow.cli.cost",))
    missing = tmp_path / "no-such-projects"
    assert cli.main(["cost", "analyze", "--claude-code", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err


def test_bad_transcript_lines_are_listed_and_the_rest_counted(tmp_path: Path, pricing: Pricing) -> None:
    project = tmp_path / "projects" / "-home-dev-x"
    project.mkdir(parents=True)
    good = {"type": "assistant", "timestamp": "2025-11-20T10:00:00Z", "requestId": "r1",
            "message": {"id": "m1", "model": "claude-haiku-4-5", "content": [{"type": "text", "text": "secret"}],
                        "usage": {"input_tokens": 1000, "output_tokens": 100}}}
    bad = [
        {**good, "message": {**good["message"], "id": "m2", "model": "claude-nonesuch-9"}},
        {**good, "message": {**good["message"], "id": "m3", "usage": {"input_tokens": -5}}},
        {**good, "message": {**good["message"], "id": "m4", "usage": {"input_tokens": 1, "cache_creation": {
            "ephemeral_1h_input_tokens": "many"}}}},
        {key: value for key, value in good.items() if key != "timestamp"},
        ["not", "an", "object"],
    ]
    lines = [json.dumps(good), *map(json.dumps, bad), '{"type": "assistant", "message": {"content": "secret"']
    (project / "s.jsonl").write_text("\n".join(lines) + "\n")
    r = analyze_costs(None, days=30, now=NOW, pricing=pricing, claude_code=tmp_path / "projects").to_dict()
    assert r["calls"] == 1 and close(r["current_cost"], (1000 * 1 + 100 * 5) * M)  # haiku-4-5: $1 in, $5 out
    errors = {m["line"]: m["error"] for m in r["malformed_lines"]}
    assert sorted(errors) == [2, 3, 4, 5, 6, 7]
    assert "claude-nonesuch-9" in errors[2] and "input_tokens" in errors[3]
    assert "ephemeral_1h_input_tokens" in errors[4] and "timestamp" in errors[5]
    assert "JSON object" in errors[6] and "JSON" in errors[7]
    assert "secret" not in json.dumps(r)
