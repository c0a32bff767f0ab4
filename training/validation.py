"""Check a cleaned training table before anything is trained: enough rows, more than one class, and no drift
from the champion's data contract (columns, types, categories, ranges, classes), and labels that still mean
what they meant (the champion, scored on the new rows, must not collapse).

Every problem is collected, one readable line each, so a failed run reports all of them at once.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sklambda.contract import MISSING_CATEGORY, canonical_category
from sklambda.contract_derivation import canonical_categories, category_counts, frame_problems
from sklambda.manifest import Manifest
from training.champion import Champion
from training.config import TrainingConfig
from training.evaluate import evaluate
from training.features import infer_task

EXAMPLES = 3
# The champion is scored on at most this many of the new rows (a fixed-seed sample): enough to see labels that
# collapsed, at a bounded cost on a table of millions of rows.
CHAMPION_SAMPLE_ROWS = 50_000


def _share(count: int, total: int) -> str:
    return f"{count} of {total} rows ({count / total:.0%})"


def validate_table(frame: pd.DataFrame, config: TrainingConfig, scored_champion: Champion | None) -> list[str]:
    """Every problem found, one line each. `frame` is cleaned (every row has a target); the champion is scored
    only when the checks before that found nothing."""
    target = config.model.target
    settings = config.data
    problems: list[str] = []
    rows = len(frame)
    if rows < settings.min_rows:
        problems.append(f"too few rows: {rows} with a target, at least {settings.min_rows} needed ([data].min_rows)")
    task = infer_task(frame[target], config.model.task) if rows else config.model.task
    if task == "classification":
        counts = frame[target].value_counts()
        if len(counts) < 2:
            only = f" ({counts.index[0]!r})" if len(counts) else ""
            problems.append(f"the target {target!r} has a single class{only}: nothing to learn")
    if scored_champion is None:
        return problems
    champion = scored_champion.manifest
    if champion.target != target or champion.task != task:
        problems.append(
            f"the champion v{champion.version} predicts {champion.target!r} ({champion.task}); "
            f"this data gives {target!r} ({task})"
        )
        return problems
    schema = [f"schema drift: column {p.field!r}: {p.message}" for p in frame_problems(frame, champion.contract)]
    problems.extend(schema)
    if schema:
        return problems  # the rest compares columns that are not there or not numbers
    labels = None
    if champion.task == "classification" and champion.classes is not None:
        labels = canonical_categories(frame[target])
    problems.extend(_drift(frame, champion, config, labels))
    if problems or settings.max_champion_metric_drop is None or not rows:
        return problems
    scored = frame
    if labels is not None and champion.classes is not None:
        # Rows of classes the champion never predicts cannot be scored (log_loss); their share is checked above.
        known = labels.isin({canonical_category(c) for c in champion.classes})
        scored = frame if known.all() else frame[known]  # the same rows: no copy of the table when all are known
    if len(scored) > CHAMPION_SAMPLE_ROWS:
        scored = scored.sample(CHAMPION_SAMPLE_ROWS, random_state=config.evaluation.random_state)
    if scored.empty:
        return problems
    # Only the metric compared: the others (ranking metrics above all) would cost more than the scoring itself.
    champion_metrics = evaluate(
        scored_champion.outputs(scored), scored, scored[target], champion.task, only=champion.metric.name
    )
    drop = _metric_drop(champion, champion_metrics)
    if drop is not None and drop > settings.max_champion_metric_drop:
        name = champion.metric.name
        problems.append(
            f"labels look changed or scrambled: the champion v{champion.version} scores {name} "
            f"{champion_metrics[name]} on {len(scored)} of the new rows against {champion.metrics[name]} when it was "
            "trained "
            f"(worse by {drop:.3g} > [data].max_champion_metric_drop {settings.max_champion_metric_drop}). "
            "Check the data; if the change is real, raise or switch off max_champion_metric_drop for this run"
        )
    return problems


def _metric_drop(champion: Manifest, on_new_rows: dict[str, float]) -> float | None:
    name = champion.metric.name
    if name not in on_new_rows or name not in champion.metrics:
        return None
    before, now = champion.metrics[name], on_new_rows[name]
    return before - now if champion.metric.greater_is_better else now - before


def _unseen(counts: pd.Series, known: set[str]) -> int:
    """Rows of present categories outside `known`."""
    categories = counts.index.to_series()
    return int(counts[(categories != MISSING_CATEGORY) & ~categories.isin(known)].sum())


def _examples(column: pd.Series, known: set[str]) -> str:
    """The most frequent present categories outside `known` (only when a problem is reported: row by row)."""
    encoded = canonical_categories(column)
    outside = (encoded != MISSING_CATEGORY) & ~encoded.isin(known)
    return ", ".join(repr(value) for value in encoded[outside].value_counts().index[:EXAMPLES])


def _drift(frame: pd.DataFrame, champion: Manifest, config: TrainingConfig, labels: pd.Series | None) -> list[str]:
    """`labels`: the target's canonical categories (classification against a champion with classes)."""
    settings = config.data
    total = len(frame)
    problems: list[str] = []
    if not total:
        return problems
    for feature in champion.contract.features:
        column = frame[feature.name]
        if feature.kind == "categorical":
            allowed = set(feature.categories or ())
            unseen = _unseen(category_counts(column), allowed)
            if unseen / total > settings.max_unseen_category_share:
                examples = _examples(column, allowed)
                problems.append(
                    f"drift: column {feature.name!r}: {_share(unseen, total)} have categories the champion "
                    f"never saw ({examples}; > [data].max_unseen_category_share {settings.max_unseen_category_share})"
                )
        elif feature.minimum is not None and feature.maximum is not None:
            # Missing values (NaN) compare false: counted as neither below nor above, without dropping them first.
            values = column.to_numpy(dtype="float64", na_value=np.nan)
            outside = int(((values < feature.minimum) | (values > feature.maximum)).sum())
            if outside / total > settings.max_out_of_range_share:
                problems.append(
                    f"drift: column {feature.name!r}: {_share(outside, total)} outside the champion's training "
                    f"range [{feature.minimum:g}, {feature.maximum:g}] "
                    f"(> [data].max_out_of_range_share {settings.max_out_of_range_share})"
                )
        if not feature.nullable:
            missing = int(column.isna().sum())
            if missing / total > settings.max_unseen_category_share:
                problems.append(
                    f"drift: column {feature.name!r}: {_share(missing, total)} are missing; the champion never "
                    "saw it missing"
                )
    if labels is not None and champion.classes is not None:
        known = {canonical_category(label) for label in champion.classes}
        new = int((~labels.isin(known)).sum())
        if new / total > settings.max_unseen_category_share:
            examples = ", ".join(repr(value) for value in labels[~labels.isin(known)].value_counts().index[:EXAMPLES])
            problems.append(
                f"drift: the target {champion.target!r}: {_share(new, total)} have classes the champion "
                f"never predicted ({examples})"
            )
    return problems
