"""``fibreflow learn list|show ID|stats``: what the failure knowledge base has learned."""

from __future__ import annotations

import argparse
from typing import Any

from fibreflow.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("learn", help="failure patterns learned from attempts", description=__doc__)
    lsub = p.add_subparsers(dest="learn_command", metavar="COMMAND")
    ls = lsub.add_parser("list", help="learned patterns, most recently seen first")
    ls.add_argument("--all", action="store_true", help="include retired patterns")
    ls.add_argument("--json", action="store_true", help="print one JSON object")
    ls.set_defaults(func=_list)
    show = lsub.add_parser("show", help="one pattern with its history")
    show.add_argument("pattern_id", metavar="ID")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(func=_show)
    stats = lsub.add_parser("stats", help="patterns per week, repeated-failure rate, success per iteration")
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    stats.set_defaults(func=_stats)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _kb() -> Any:
    from fibreflow.learning import FailureKnowledgeBase

    return FailureKnowledgeBase()


def _list(args: argparse.Namespace) -> int:
    from fibreflow.cli import emit_json

    patterns = _kb().list_patterns(include_retired=args.all)
    if args.json:
        emit_json({"patterns": patterns})
        return 0
    if not patterns:
        print("no patterns learned yet")
    for p in patterns:
        state = " retired" if p["retired"] else ""
        print(f"{p['pattern_id']}  {p['error_type']:<20} {p['affected_module'] or '-':<24} "
              f"x{p['count']:<4} w={p['weight']:.2f}{state}  {p['example'][:60]}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from fibreflow.cli import emit_json

    pattern = _kb().get(args.pattern_id)
    if pattern is None:
        raise ConfigError(f"no learned pattern with id {args.pattern_id!r} (see `fibreflow learn list`)",
                          key="ID")
    if args.json:
        emit_json(pattern)
        return 0
    for key in ("pattern_id", "error_type", "affected_module", "signature", "example", "suggested_fix", "count",
                "first_seen", "last_seen", "features", "agents", "weight", "shown", "helped", "retired"):
        print(f"{key}: {pattern[key]}")
    print("events:")
    for e in pattern["events"]:
        print(f"  {e['at']}  {e['event']:<9} {e['feature_id'] or '-'} {e['agent'] or '-'} {e['attempt_id'] or ''}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from fibreflow.cli import emit_json
    from fibreflow.learning import learning_stats

    stats = learning_stats(_kb().store)
    if args.json:
        emit_json(stats)
        return 0
    print(f"patterns: {stats['patterns']} ({stats['retired']} retired), failures stored: {stats['failures']}")
    print(f"repeated-failure rate: {stats['repeated_failure_rate']:.1%}")
    print("patterns per week:")
    for w in stats["patterns_per_week"]:
        print(f"  {w['week']}  new {w['new_patterns']:>4}  failures {w['failures']:>4}")
    print("success rate per iteration:")
    for it in stats["success_rate_by_iteration"]:
        print(f"  iteration {it['iteration']}: {it['passed']}/{it['attempts']} = {it['success_rate']:.1%}")
    return 0
