"""`python -m training describe VERSION`: everything the store knows about one version."""

from __future__ import annotations

import argparse
from typing import Any

from sklambda.contract import MISSING_CATEGORY
from sklambda.manifest import Manifest
from sklambda.monitoring import BASELINE_FILE, NumericBaseline, read_baseline
from sklambda.registry import describe_version
from sklambda.store import ModelStore
from training.commands.common import add_registry_options, open_model, print_json, print_table
from training.evaluate import describe_runtimes


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "describe",
        help="show one version's manifest: data, contract, metrics, libraries, checksums, status, aliases",
        description="Show what the store recorded about one version (the full manifest with --json).",
    )
    parser.add_argument("version", type=int, help="version number")
    add_registry_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    store, name = open_model(args)
    detail = describe_version(store, name, args.version)
    if args.json:
        print_json(detail)
        return 0
    manifest, status = detail.manifest, detail.status
    direction = "higher" if manifest.metric.greater_is_better else "lower"
    aliases = [*detail.aliases, *(f"{alias} (rollback target)" for alias in detail.rollback_target_of)]
    facts = [
        ("created", manifest.created_at),
        ("status", f"{status.status}: {status.reason} (by {status.by}, {status.updated_at})"),
        ("aliases", ", ".join(aliases) or "-"),
        ("task", f"{manifest.task} of {manifest.target!r} with {manifest.estimator}"),
        ("pipeline", _pipeline(manifest.training.get("pipeline"))),
        ("data", f"{manifest.data.uri}  sha256 {manifest.data.sha256}  {manifest.data.rows} rows"),
        ("metrics", ", ".join(f"{metric}={value:.6g}" for metric, value in manifest.metrics.items())),
        ("gate metric", f"{manifest.metric.name} ({direction} is better)"),
        (
            "compared with",
            f"v{manifest.compared_with.version}: "
            + ", ".join(f"{metric}={value:.6g}" for metric, value in manifest.compared_with.metrics.items())
            if manifest.compared_with
            else "- (no champion then)",
        ),
        ("libraries", ", ".join(f"{library} {version}" for library, version in manifest.libraries.items())),
        ("code version", manifest.code_version or "unknown"),
        (
            "runtimes",
            "; ".join(
                f"{runtime}: {support.artifact}" + (f" (opset {support.opset})" if support.opset else "")
                for runtime, support in manifest.runtimes.items()
                if support.supported
            )
            or "- (none reproduces the pipeline)",
        ),
        *((f"sha256 {file}", digest) for file, digest in manifest.artifacts.items()),
        ("sha256 manifest", manifest.manifest_sha256 or "-"),
    ]
    print(f"{manifest.name} v{manifest.version} in {store.uri}")
    for label, value in facts:
        print(f"  {label:<22}{value}")
    print("  serving runtimes (each checked through the serving code on the golden and the held-out rows):")
    for line in describe_runtimes(manifest):
        print(f"    {line}")
    print(f"  contract: {len(manifest.contract.features)} features")
    print_table(
        ["    feature", "kind", "type", "nullable", "seen in training"],
        [
            (
                f"    {feature.name}",
                feature.kind,
                feature.value_type,
                "yes" if feature.nullable else "no",
                ", ".join(feature.categories)
                if feature.categories is not None
                else f"[{feature.minimum:g}, {feature.maximum:g}]"
                if feature.minimum is not None and feature.maximum is not None
                else "-",
            )
            for feature in manifest.contract.features
        ],
    )
    print(
        f"  missing values: accepted where nullable; a missing category reaches the model as {MISSING_CATEGORY!r} "
        "and a missing number as NaN, as in training (`python -m training predict` shows the served answers)"
    )
    _print_baseline(store, manifest)
    return 0


def _print_baseline(store: ModelStore, manifest: Manifest) -> None:
    """The training distribution the monitor compares live traffic with (versions before it: none)."""
    if BASELINE_FILE not in manifest.artifacts:
        print("  baseline: none (trained before baselines were recorded: the monitor reports no drift for it)")
        return
    baseline = read_baseline(store.artifact(manifest, BASELINE_FILE))
    print(f"  baseline: {baseline.rows} training rows (what the monitor's drift compares with)")
    rows = []
    for name, feature in baseline.features.items():
        if isinstance(feature, NumericBaseline):
            edges = feature.edges
            shape = (
                f"{len(feature.shares)} bins, quantile edges {edges[0]:g} .. {edges[-1]:g}" if edges else "no values"
            )
        else:
            top = sorted(feature.shares.items(), key=lambda item: -item[1])[:4]
            shape = ", ".join(f"{category} {share:.0%}" for category, share in top)
        rows.append((f"    {name}", shape, f"{feature.missing_share:.1%}"))
    print_table(["    feature", "training distribution", "missing"], rows)
    output = baseline.output
    if output.class_shares is not None:
        shares = ", ".join(f"{label} {share:.0%}" for label, share in output.class_shares.items())
    else:
        shares = f"{len(output.shares or [])} quantile bins of the predicted values"
    print(f"  outputs on held-out rows: {shares}")


def _pipeline(recorded: Any) -> str:
    """Where the pipeline came from and its steps, as training recorded them (versions before: not recorded)."""
    if not isinstance(recorded, dict):
        return "- (not recorded)"
    source = f"{recorded['factory']} (your pipeline)" if recorded.get("factory") else "standard preprocessing"
    return f"{source}: " + " → ".join(recorded.get("steps", []))
