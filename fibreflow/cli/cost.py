"""``fibreflow cost analyze [LOG ...] [--claude-code [DIR]] [--days 30] [--json]``: spend, routed
spend, all-Sonnet spend, by routed tier, agent, model, day and project."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cost", help="model cost analysis", description=__doc__)
    csub = p.add_subparsers(dest="cost_command", metavar="COMMAND")
    a = csub.add_parser("analyze", help="what model calls cost, and what routing saves",
                        description="Reads llm_calls from the store and/or JSON-lines call logs "
                                    "(one object per call: timestamp, agent, model, input_tokens, "
                                    "output_tokens, cache_creation_input_tokens, cache_read_input_tokens, "
                                    "optionally the task text under task/prompt/command), and/or "
                                    "Claude Code session transcripts (--claude-code).")
    a.add_argument("logs", nargs="*", type=Path, metavar="LOG", help="JSON-lines call logs")
    a.add_argument("--claude-code", nargs="?", const="~/.claude/projects", default=None, metavar="DIR",
                   help="read Claude Code session transcripts under DIR (default ~/.claude/projects; "
                        "every project, subagent files included), each response once; the store is "
                        "then left out unless --store is given")
    a.add_argument("--store", action="store_true", help="with --claude-code: include llm_calls too")
    a.add_argument("--days", type=float, default=30.0, help="window in days (default 30)")
    a.add_argument("--no-store", action="store_true", help="ignore llm_calls in the store")
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.set_defaults(func=_analyze)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _analyze(args: argparse.Namespace) -> int:
    from fibreflow.cli import emit_json
    from fibreflow.config import load_settings
    from fibreflow.costs.analysis import MAX_DAYS, analyze_costs
    from fibreflow.errors import ConfigError
    from fibreflow.store import Store

    if not 0 < args.days <= MAX_DAYS:  # also refuses nan; a longer window overflows the calendar
        raise ConfigError(f"--days must be above 0 and at most {MAX_DAYS}, got {args.days:g}", key="--days")
    for log in args.logs:
        if not log.is_file():
            raise ConfigError("log file not found", path=str(log))
    transcripts = Path(args.claude_code).expanduser() if args.claude_code is not None else None
    if transcripts is not None and not transcripts.is_dir():
        raise ConfigError("Claude Code transcript directory not found (--claude-code)", path=str(transcripts))
    settings = load_settings()
    store = None
    use_store = not args.no_store and (transcripts is None or args.store)
    if use_store and Path(settings.db_path).exists():
        store = Store(settings.db_path, lock_timeout_s=settings.store.lock_timeout_s)
    result = analyze_costs(store, args.logs, days=args.days, claude_code=transcripts).to_dict()
    if args.json:
        emit_json(result)
    else:
        _print(result)
    return 0


def _print(r: dict[str, Any]) -> None:
    print(f"{r['calls']} calls in the last {r['days']:g} days ({', '.join(r['sources']) or 'no sources'})")
    if r["transcripts"]:
        t = r["transcripts"]
        print(f"  Claude Code: {t['files']} transcript files, {t['responses']} responses "
              f"({t['duplicates']} duplicate copies and {t['synthetic']} <synthetic> lines skipped)")
    print(f"  current cost:     ${r['current_cost']:.4f}")
    print(f"  routed cost:      ${r['routed_cost']:.4f}  (saves ${r['savings']:.4f})")
    print(f"  all-Sonnet cost:  ${r['all_sonnet_cost']:.4f}  (routing saves ${r['savings_vs_sonnet']:.4f})")
    m = r["monthly_projection"]
    print(f"  per 30 days:      current ${m['current_cost']:.2f}, routed ${m['routed_cost']:.2f}, "
          f"all-Sonnet ${m['all_sonnet_cost']:.2f}")
    tables = [("by routed tier", "by_tier"), ("by agent", "by_agent"), ("by model", "by_model"),
              ("by day (UTC)", "by_day")]
    if set(r["by_project"]) != {"(none)"}:
        tables.append(("by project", "by_project"))
    for title, key in tables:
        print(f"{title}:")
        for name, row in r[key].items():
            print(f"  {name:<28} {row['calls']:>6} calls  current ${row['current_cost']:.4f}  "
                  f"routed ${row['routed_cost']:.4f}  saves ${row['savings']:.4f}  "
                  f"all-Sonnet ${row['all_sonnet_cost']:.4f}")
    if r["malformed_lines"]:
        print(f"{r['malformed_count']} malformed lines skipped:")
        for bad in r["malformed_lines"][:20]:
            print(f"  {bad['file']}:{bad['line']}: {bad['error']}")
        if r["malformed_count"] > 20:
            print(f"  ... and {r['malformed_count'] - 20} more (--json lists every one)")
