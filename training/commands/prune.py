"""`python -m training prune`: apply the retention policy. A dry run unless --apply."""

from __future__ import annotations

import argparse
from typing import Any

from sklambda.registry import RetentionPolicy, apply_retention, plan_retention
from training.commands.common import add_registry_options, cli_settings, open_model, print_json, print_table, who


def register(commands: Any) -> None:
    defaults = cli_settings()
    parser: argparse.ArgumentParser = commands.add_parser(
        "prune",
        help="delete old versions under the retention policy (dry run unless --apply)",
        description=(
            "Keep the newest N versions and every version younger than D days; delete the others. Never deleted, "
            "whatever N and D say: a version an alias points at, the previous holder of an alias (the previous "
            "champion), and every version on a rollback stack. Without --apply, only prints the plan."
        ),
    )
    add_registry_options(parser)
    parser.add_argument(
        "--keep-last",
        type=int,
        default=defaults.retention_keep_last,
        help="keep the newest N versions (default: $RETENTION_KEEP_LAST or 10; at least 1)",
    )
    parser.add_argument(
        "--keep-days",
        type=float,
        default=defaults.retention_keep_days,
        help="keep every version younger than D days (default: $RETENTION_KEEP_DAYS or 30)",
    )
    parser.add_argument("--apply", action="store_true", help="delete for real (default: dry run)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    store, name = open_model(args)
    policy = RetentionPolicy(keep_last=args.keep_last, keep_days=args.keep_days)
    plan = plan_retention(store, name, policy)
    result = apply_retention(store, plan, by=who("python -m training prune")) if args.apply else None
    if args.json:
        print_json(result if result is not None else plan)
        return 0
    mode = "applied" if result is not None else "dry run, nothing deleted: pass --apply to delete"
    print(
        f"retention for {plan.model} in {store.uri}: keep the newest {policy.keep_last} and every version "
        f"younger than {policy.keep_days:g} days ({mode})"
    )
    print_table(
        ["version", "action", "why"],
        [(decision.version, decision.action, "; ".join(decision.reasons)) for decision in plan.decisions],
    )
    if plan.purge:
        print(f"leftover files of unfinished or deleted versions to remove: {', '.join(map(str, plan.purge))}")
    if result is not None:
        deleted = ", ".join(f"v{version}" for version in result.deleted) or "none"
        print(f"deleted: {deleted}")
        if result.spared:
            print(f"spared (an alias moved to them meanwhile): {', '.join(f'v{v}' for v in result.spared)}")
    return 0
