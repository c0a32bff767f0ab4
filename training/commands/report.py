"""`python -m training report`: one self-contained HTML file with plots about a model, read from the store."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from training.commands.common import add_registry_options, open_model


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "report",
        help="write an HTML model report: metric across versions, challenger vs champion, confusion matrix or "
        "residuals, feature importance, data contract",
        description=(
            "Read a model's manifests and retrain run records from the store (a local folder or S3) and write one "
            "self-contained HTML file (plots embedded, nothing else needed to open it): the held-out metric of "
            "every version, the last challenger-vs-champion comparison with its gate checks, the confusion matrix "
            "(classification) or residuals (regression) and the permutation importance of the alias's version, its "
            "pipeline and data contract, and the versions and runs, newest first. Nothing is retrained."
        ),
    )
    add_registry_options(parser, json_output=False)
    parser.add_argument(
        "--out", type=Path, default=Path("report.html"), help="where to write it (default: report.html)"
    )
    parser.add_argument(
        "--version", type=int, help="the version the detail sections describe (default: the alias's, else the newest)"
    )
    parser.add_argument("--runs", type=int, default=20, help="how many retrain runs to list (default: 20)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from training.report import report_html  # matplotlib: only when a report is drawn

    store, name = open_model(args)
    document = report_html(store, name, alias=args.alias, runs=args.runs, version=args.version)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(document, encoding="utf-8")
    print(f"wrote {args.out} ({len(document.encode()) / 1000:.0f} kB): {name} in {store.uri}")
    return 0
