"""`python -m training diff BASE OTHER`: what changed between two versions (metrics, contract, data, libraries)."""

from __future__ import annotations

import argparse
from typing import Any

from sklambda.registry import diff_versions
from training.commands.common import add_registry_options, open_model, print_json, print_table


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "diff",
        help="compare two versions: held-out metrics, data contract, training data, libraries",
        description="Compare two versions of a model: what changed from BASE to OTHER.",
    )
    parser.add_argument("base", type=int, help="version to compare from")
    parser.add_argument("other", type=int, help="version to compare to")
    add_registry_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    store, name = open_model(args)
    diff = diff_versions(store, name, args.base, args.other)
    if args.json:
        print_json(diff)
        return 0
    direction = "higher" if diff.metric.greater_is_better else "lower"
    print(f"{diff.model} v{diff.base} → v{diff.other}")
    print(f"metrics (held-out; the gate compares {diff.metric.name}, {direction} is better):")
    print_table(
        ["  metric", f"v{diff.base}", f"v{diff.other}", "change"],
        [
            (f"  {m.name}", _number(m.base), _number(m.other), None if m.change is None else f"{m.change:+.6g}")
            for m in diff.metrics
        ],
    )
    if diff.contract_unchanged:
        print("contract: unchanged")
    else:
        print("contract:")
        for feature in diff.features_added:
            print(f"  + {feature.name} ({feature.kind}, {feature.value_type})")
        for removed in diff.features_removed:
            print(f"  - {removed}")
        for change in diff.features_changed:
            for line in change.changes:
                print(f"  ~ {change.name}: {line}")
        for line in diff.contract:
            print(f"  ~ {line}")
    print("data: " + ("; ".join(diff.data) if diff.data else "same table (same sha256)"))
    libraries = [f"{library} {before or '-'} → {after or '-'}" for library, (before, after) in diff.libraries.items()]
    print("libraries: " + ("; ".join(libraries) if libraries else "unchanged"))
    return 0


def _number(value: float | None) -> str | None:
    return None if value is None else f"{value:.6g}"
