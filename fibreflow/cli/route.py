"""``fibreflow route "TEXT" [--agent NAME] [--model TIER] [--json]``: show where a request goes."""

from __future__ import annotations

import argparse

from fibreflow.config import TIERS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("route", help="classify a request into a model tier and print why",
                       description=__doc__)
    p.add_argument("text", help="the task text to classify")
    p.add_argument("--agent", default=None, help="the agent asking (agent rules from config apply)")
    p.add_argument("--model", choices=TIERS, default=None, help="explicit tier override (wins over everything)")
    p.add_argument("--json", action="store_true", help="print one JSON object: tier, model_id, reason")
    p.set_defaults(func=_route)


def _route(args: argparse.Namespace) -> int:
    from fibreflow.cli import emit_json
    from fibreflow.models.routing import ModelRouter

    decision = ModelRouter().classify_request(args.text, args.agent, tier=args.model)
    if args.json:
        emit_json(decision.to_dict())
    else:
        print(f"tier:   {decision.tier}\nmodel:  {decision.model_id}\nreason: {decision.reason}")
    return 0
