"""The model report: one self-contained HTML file, read from any model store (local folder or S3), no retraining.

What it shows comes from what training stored: each version's manifest (held-out metrics, the champion it was
compared with, the data contract, and the held-out evaluation: confusion matrix or (actual, predicted) pairs,
permutation importance) and the retrain run records. Plots are drawn with matplotlib as SVG and embedded as
data URIs, so the file opens anywhere, offline, with nothing next to it. matplotlib is imported only here, when a
report is drawn: it is a laptop dependency (requirements.txt), in no Lambda layer.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sklambda.errors import IntegrityError, NotFound
from sklambda.manifest import AliasRecord, Manifest, utc_now
from sklambda.monitor import MonitoringRecord, monitoring_records
from sklambda.registry import VersionRow, list_versions
from sklambda.runs import RunLog, RunRecord
from sklambda.store import ModelStore
from training.evaluate import describe_runtimes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

STATUS_COLOURS = {"promoted": "#2a9d8f", "rejected": "#e76f51", "candidate": "#8d99ae", "retired": "#b08968"}
CHALLENGER, CHAMPION = "#264653", "#e9c46a"
TOP_FEATURES = 20
# The monitoring section plots the newest this many monitor runs.
MONITORING_RECORDS = 200


@dataclass
class ReportData:
    """Everything the report shows, read from the store."""

    name: str
    store_uri: str
    alias: str
    versions: list[VersionRow]
    manifests: dict[int, Manifest]
    alias_record: AliasRecord | None
    runs: list[RunRecord]
    # The version the detail sections describe: the alias's, else the newest.
    focus: int | None
    unreadable: dict[int, str] = field(default_factory=dict)
    generated_at: str = field(default_factory=utc_now)
    # The monitor's records (drift, live metric), oldest first.
    monitoring: list[MonitoringRecord] = field(default_factory=list)

    @property
    def champion(self) -> int | None:
        return self.alias_record.version if self.alias_record else None


def gather(
    store: ModelStore, name: str, *, alias: str = "champion", runs: int = 20, version: int | None = None
) -> ReportData:
    listing = list_versions(store, name)
    if not listing.versions:
        raise NotFound(f"{name} has no versions in {store.uri}: train one first (python -m training train)")
    manifests: dict[int, Manifest] = {}
    unreadable: dict[int, str] = {}
    for row in listing.versions:
        try:
            manifests[row.version] = store.manifest(name, row.version)
        except (IntegrityError, NotFound) as error:  # listed a moment ago; a report still shows the rest
            unreadable[row.version] = str(error)
    alias_record = store.aliases(name).get(alias)
    if version is not None and version not in manifests:
        raise NotFound(f"{name} has no readable version {version}; versions: {sorted(manifests)}")
    focus = version or (alias_record.version if alias_record and alias_record.version in manifests else None)
    if focus is None and manifests:
        focus = max(manifests)
    return ReportData(
        name=name,
        store_uri=store.uri,
        alias=alias,
        versions=listing.versions,
        manifests=manifests,
        alias_record=alias_record,
        runs=RunLog(store.objects, name).list(runs),
        focus=focus,
        unreadable=unreadable,
        monitoring=monitoring_records(store, name, limit=MONITORING_RECORDS),
    )


# ------------------------------------------------------------------------------------------------ plots


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return figure


def _svg_image(figure: Figure, alt: str) -> str:
    """The figure as an <img> holding its SVG as a data URI (self-contained; ids cannot clash across plots)."""
    from matplotlib import rc_context

    buffer = io.BytesIO()
    # A fixed salt gives the same bytes for the same plot: reports of the same store can be compared.
    with rc_context({"svg.hashsalt": "sklambda", "svg.fonttype": "path"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="plot" alt="{html.escape(alt)}" src="data:image/svg+xml;base64,{data}">'


def metric_across_versions(data: ReportData) -> str | None:
    points = [
        (row.version, row.value, row.status)
        for row in data.versions
        if row.value is not None and row.version in data.manifests
    ]
    if not points:
        return None
    metric = data.manifests[points[-1][0]].metric
    figure = _figure(7.5, 3.2)
    axes = figure.subplots()
    versions = [version for version, _, _ in points]
    values = [value for _, value, _ in points]
    axes.plot(versions, values, color="#adb5bd", linewidth=1, zorder=1)
    for status, colour in STATUS_COLOURS.items():
        chosen = [(version, value) for version, value, state in points if state == status]
        if chosen:
            xs, ys = zip(*chosen, strict=True)
            axes.scatter(xs, ys, color=colour, s=46, label=status, zorder=2)
    if data.champion is not None and data.champion in versions:
        value = values[versions.index(data.champion)]
        axes.scatter([data.champion], [value], marker="*", s=320, color=CHAMPION, edgecolor="#333333", zorder=3)
        axes.annotate(
            f"{data.alias} v{data.champion}",
            (data.champion, value),
            textcoords="offset points",
            xytext=(0, 11),
            ha="center",
            fontsize=9,
        )
    axes.set_xlabel("version")
    direction = "higher is better" if metric.greater_is_better else "lower is better"
    axes.set_ylabel(f"{metric.name} ({direction})")
    axes.set_xticks(versions if len(versions) <= 25 else axes.get_xticks())
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize=8, frameon=False)
    axes.margins(y=0.25)
    return _svg_image(figure, f"held-out {metric.name} of each version of {data.name}")


@dataclass(frozen=True)
class ReportedComparison:
    """Challenger against champion on the same held-out rows: from the last run that compared, else the newest
    version that recorded a comparison."""

    source: str
    challenger: int | None
    champion: int
    challenger_metrics: dict[str, float]
    champion_metrics: dict[str, float]
    verdict: str


def last_comparison(data: ReportData) -> ReportedComparison | None:
    for run in data.runs:
        if run.metrics and run.champion_metrics and run.champion_version is not None:
            return ReportedComparison(
                source=f"retrain run {run.run_id} ({run.trigger})",
                challenger=run.version,
                champion=run.champion_version,
                challenger_metrics=run.metrics,
                champion_metrics=run.champion_metrics,
                verdict=f"{run.status}: {run.reason}",
            )
    for version in sorted(data.manifests, reverse=True):
        manifest = data.manifests[version]
        if manifest.compared_with is not None:
            status = next((row for row in data.versions if row.version == version), None)
            return ReportedComparison(
                source=f"v{version} at training",
                challenger=version,
                champion=manifest.compared_with.version,
                challenger_metrics=manifest.metrics,
                champion_metrics=manifest.compared_with.metrics,
                verdict=f"{status.status}: {status.reason}" if status else "",
            )
    return None


def comparison_plot(comparison: ReportedComparison, primary: str | None) -> str:
    names = [name for name in comparison.challenger_metrics if name in comparison.champion_metrics]
    names.sort(key=lambda name: name != primary)
    figure = _figure(min(2.1 * len(names) + 0.6, 9.0), 2.7)
    panels = figure.subplots(1, len(names), squeeze=False)[0]
    challenger = f"v{comparison.challenger}" if comparison.challenger is not None else "?"
    labels = [f"{challenger}\nchallenger", f"v{comparison.champion}\nchampion"]
    for axes, name in zip(panels, names, strict=True):
        values = [comparison.challenger_metrics[name], comparison.champion_metrics[name]]
        bars = axes.bar(labels, values, color=[CHALLENGER, CHAMPION], width=0.6)
        axes.bar_label(bars, labels=[f"{value:.4g}" for value in values], fontsize=8, padding=2)
        axes.set_title(name + (" (gate)" if name == primary else ""), fontsize=10)
        axes.margins(y=0.2)
        axes.tick_params(labelsize=8)
        axes.grid(axis="y", alpha=0.3)
    return _svg_image(figure, f"challenger v{comparison.challenger} against champion v{comparison.champion}")


def confusion_plot(manifest: Manifest) -> str | None:
    held_out = manifest.held_out
    if held_out is None or held_out.confusion is None or held_out.labels is None:
        return None
    import numpy as np

    matrix = np.asarray(held_out.confusion)
    labels = [str(label) for label in held_out.labels]
    size = max(3.2, 0.55 * len(labels) + 2.2)
    figure = _figure(size + 0.8, size)
    axes = figure.subplots()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, shrink=0.8, label="rows")
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("actual")
    threshold = matrix.max() / 2 if matrix.size else 0
    if len(labels) <= 20:
        for (row, column), count in np.ndenumerate(matrix):
            axes.text(
                column,
                row,
                str(count),
                ha="center",
                va="center",
                fontsize=9,
                color="white" if count > threshold else "#222222",
            )
    return _svg_image(figure, f"confusion matrix of v{manifest.version} on {held_out.rows} held-out rows")


def residual_plots(manifest: Manifest) -> str | None:
    held_out = manifest.held_out
    if held_out is None or not held_out.actual or not held_out.predicted:
        return None
    import numpy as np

    actual = np.asarray(held_out.actual)
    predicted = np.asarray(held_out.predicted)
    residuals = actual - predicted
    figure = _figure(9.0, 3.4)
    left, middle, right = figure.subplots(1, 3)
    low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    left.scatter(actual, predicted, s=12, alpha=0.6, color=CHALLENGER)
    left.plot([low, high], [low, high], color="#999999", linewidth=1, linestyle="--")
    left.set(xlabel="actual", ylabel="predicted", title="predicted vs actual")
    middle.scatter(predicted, residuals, s=12, alpha=0.6, color=CHALLENGER)
    middle.axhline(0, color="#999999", linewidth=1, linestyle="--")
    middle.set(xlabel="predicted", ylabel="actual - predicted", title="residuals")
    right.hist(residuals, bins=min(30, max(5, len(residuals) // 5)), color=CHALLENGER, alpha=0.85)
    right.set(xlabel="actual - predicted", ylabel="rows", title="residual distribution")
    for axes in (left, middle, right):
        axes.grid(alpha=0.3)
        axes.title.set_fontsize(10)
    return _svg_image(figure, f"residuals of v{manifest.version} on {len(actual)} held-out rows")


def importance_plot(manifest: Manifest) -> str | None:
    held_out = manifest.held_out
    if held_out is None or not held_out.importance:
        return None
    ranked = sorted(held_out.importance, key=lambda item: item.mean, reverse=True)[:TOP_FEATURES]
    ranked.reverse()  # barh draws bottom-up: most important on top
    figure = _figure(7.5, max(2.2, 0.32 * len(ranked) + 1.0))
    axes = figure.subplots()
    axes.barh(
        [item.feature for item in ranked],
        [item.mean for item in ranked],
        xerr=[item.std for item in ranked],
        color=CHALLENGER,
        ecolor="#888888",
        capsize=3,
    )
    axes.axvline(0, color="#999999", linewidth=1)
    axes.set_xlabel(f"drop in {held_out.importance_metric} when the column is shuffled")
    axes.grid(axis="x", alpha=0.3)
    axes.tick_params(labelsize=9)
    return _svg_image(figure, f"permutation importance of the input columns of v{manifest.version}")


# ------------------------------------------------------------------------------------------------ HTML

STYLE = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222; margin: 0;
       background: #f6f7f9; }
main { max-width: 1040px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 32px 0 8px; }
.meta { color: #666; font-size: 13px; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin: 18px 0 0; }
.card { background: #fff; border: 1px solid #e3e5e8; border-radius: 8px; padding: 10px 14px; min-width: 150px; }
.card b { display: block; font-size: 20px; } .card span { color: #666; font-size: 12px; }
section { background: #fff; border: 1px solid #e3e5e8; border-radius: 8px; padding: 4px 18px 16px; margin-top: 18px; }
img.plot { max-width: 100%; height: auto; display: block; margin: 8px 0; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { text-align: left; padding: 4px 10px 4px 0; border-bottom: 1px solid #eee; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.status { padding: 1px 7px; border-radius: 9px; color: #fff; font-size: 12px; }
.pass { color: #2a9d8f; } .fail { color: #e76f51; font-weight: 600; }
.note { color: #666; font-size: 13px; } code { font-size: 12px; background: #f1f3f5; padding: 1px 4px; }
"""


def _e(value: object) -> str:
    return html.escape("-" if value is None else str(value))


def _status(status: str) -> str:
    colour = STATUS_COLOURS.get(status, "#6c757d")
    return f'<span class="status" style="background:{colour}">{_e(status)}</span>'


def _table(header: list[str], rows: list[list[str]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{_e(cell)}</th>" for cell in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{cell}</td>' if index in numeric else f"<td>{cell}</td>" for index, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(title: str, *parts: str) -> str:
    return f"<section><h2>{_e(title)}</h2>{''.join(parts)}</section>"


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def _cards(data: ReportData) -> str:
    cards: list[tuple[str, str]] = []
    champion = data.manifests.get(data.champion) if data.champion is not None else None
    cards.append((f"v{data.champion}" if data.champion is not None else "none", f"{data.alias} (serving)"))
    if champion is not None:
        cards.append((f"{champion.primary_metric:.4g}", f"{champion.metric.name}, held out"))
        cards.append((champion.task, f"predicts {champion.target}"))
    cards.append((str(len(data.versions)), "versions"))
    if data.runs:
        last = data.runs[0]
        cards.append((last.status, f"last retrain run, {last.requested_at[:10]}"))
    return (
        '<div class="cards">'
        + "".join(f"<div class='card'><b>{_e(big)}</b><span>{_e(small)}</span></div>" for big, small in cards)
        + "</div>"
    )


def _versions_table(data: ReportData) -> str:
    rows = []
    for row in sorted(data.versions, key=lambda item: item.version, reverse=True):
        aliases = ", ".join([*row.aliases, *(f"{alias} (rollback)" for alias in row.rollback_target_of)])
        manifest = data.manifests.get(row.version)
        estimator = manifest.estimator.rsplit(".", 1)[-1] if manifest else "unreadable"
        rows.append(
            [
                f"v{row.version}",
                _e(row.created_at.replace("T", " ")[:19]),
                _e(estimator),
                _e(f"{row.value:.4g}" if row.value is not None else None),
                _status(row.status),
                _e(aliases or ""),
                _e(row.reason),
            ]
        )
    metric = data.versions[0].metric if data.versions else "metric"
    return _table(["version", "created (UTC)", "estimator", metric, "status", "alias", "reason"], rows, {3})


def _runs_table(data: ReportData) -> str:
    if not data.runs:
        return _note(
            "No training runs recorded yet: runs come from <code>python -m training train</code> and "
            "<code>retrain</code>, and from the retrain function (schedule, POST /retrain)."
        )
    rows = []
    for run in data.runs:
        metric = run.metric or ""
        challenger = run.metrics.get(metric) if run.metrics and metric else None
        champion = run.champion_metrics.get(metric) if run.champion_metrics and metric else None
        rows.append(
            [
                _e(run.run_id),
                _e(run.trigger),
                _status(run.status),
                _e(f"v{run.version}" if run.version is not None else None),
                _e(f"{challenger:.4g}" if challenger is not None else None),
                _e(f"{champion:.4g}" if champion is not None else None),
                _e(run.data.rows if run.data else None),
                _e(f"{run.duration_seconds:.1f}" if run.duration_seconds is not None else None),
                _e(run.reason if not run.data_problems else f"{run.reason}: {run.data_problems[0]}"),
            ]
        )
    return _table(
        ["run", "trigger", "status", "version", "challenger", "champion", "rows", "seconds", "reason"],
        rows,
        {4, 5, 6, 7},
    )


def _gate_checks(data: ReportData) -> str:
    run = next((run for run in data.runs if run.gate), None)
    if run is None:
        return ""
    items = "".join(
        f"<li><span class='{'pass' if check.passed else 'fail'}'>{'pass' if check.passed else 'FAIL'}</span> "
        f"<b>{_e(check.name)}</b>: {_e(check.detail)}</li>"
        for check in run.gate
    )
    return f"<p>Gate checks of run <code>{_e(run.run_id)}</code> ({_e(run.status)}):</p><ul>{items}</ul>"


def _contract_table(manifest: Manifest) -> str:
    rows = []
    for feature in manifest.contract.features:
        if feature.kind == "numeric":
            values = (
                f"{feature.minimum:.6g} … {feature.maximum:.6g}"
                if feature.minimum is not None and feature.maximum is not None
                else "-"
            )
        else:
            categories = feature.categories or []
            shown = ", ".join(categories[:8]) + (f", … ({len(categories)} in all)" if len(categories) > 8 else "")
            values = shown
        rows.append(
            [
                f"<code>{_e(feature.name)}</code>",
                _e(feature.kind),
                _e(feature.value_type),
                _e("yes" if feature.nullable else "no"),
                _e(values),
            ]
        )
    unknown = "accepted and ignored" if manifest.contract.allow_unknown_fields else "refused (422)"
    classes = f" Classes: {_e(', '.join(map(str, manifest.classes)))}." if manifest.classes else ""
    return _table(["feature", "kind", "type", "nullable", "training range / categories"], rows) + _note(
        f"Target <code>{_e(manifest.target)}</code> ({_e(manifest.task)}).{classes} Requests with fields outside "
        f"the contract are {unknown}. Trained on {manifest.data.rows:,} rows of <code>{_e(manifest.data.uri)}</code> "
        f"(sha256 {_e(manifest.data.sha256[:12])}…)."
    )


def _pipeline_note(manifest: Manifest) -> str:
    pipeline = manifest.training.get("pipeline") or {}
    steps = pipeline.get("steps") or []
    source = (
        f"your pipeline from <code>{_e(pipeline['factory'])}</code>"
        if pipeline.get("factory")
        else "the standard preprocessing and the configured estimator"
    )
    listed = "".join(f"<li><code>{_e(step)}</code></li>" for step in steps)
    # The same words as `train` and `describe`: per runtime, golden and held-out agreement, the usual cause.
    runtimes = "".join(f"<li>{_e(line)}</li>" for line in describe_runtimes(manifest))
    return (
        f"<p><b>{_e(manifest.estimator)}</b>, {source}.</p>"
        + (f"<ul>{listed}</ul>" if listed else "")
        + "<p>Serving runtimes, each checked through the serving code on the golden and the held-out rows:</p>"
        + f"<ul>{runtimes}</ul>"
    )


def render(data: ReportData) -> str:
    """The report as one HTML document."""
    focus = data.manifests.get(data.focus) if data.focus is not None else None
    parts = [
        f"<h1>{_e(data.name)}: model report</h1>",
        f"<div class='meta'>store <code>{_e(data.store_uri)}</code> · generated {_e(data.generated_at)} · "
        f"alias <code>{_e(data.alias)}</code></div>",
        _cards(data),
    ]
    trend = metric_across_versions(data)
    parts.append(
        _section(
            "Held-out metric across versions",
            trend or _note("No version has a metric yet."),
            _note(
                "Each version is scored on the rows held out from its own training data; the gate compares a "
                "challenger with the champion on the same rows (next section). ★ marks the version the alias "
                "serves."
            ),
        )
    )
    comparison = last_comparison(data)
    if comparison is not None:
        primary = focus.metric.name if focus else None
        parts.append(
            _section(
                "Challenger vs champion: the last comparison",
                f"<p>{_e(comparison.source)}: v{_e(comparison.challenger)} against champion v{_e(comparison.champion)} "
                f"on the same held-out rows. <b>{_e(comparison.verdict)}</b></p>",
                comparison_plot(comparison, primary),
                _gate_checks(data),
            )
        )
    else:
        parts.append(
            _section(
                "Challenger vs champion: the last comparison",
                _note("No comparison yet: the first version had no champion to be compared with."),
            )
        )
    if focus is not None:
        which = f"v{focus.version}" + (f" ({data.alias})" if focus.version == data.champion else "")
        evaluation = confusion_plot(focus) if focus.task == "classification" else residual_plots(focus)
        held_out = focus.held_out
        missing = _note(
            "Not recorded for this version (it was trained before held-out summaries were stored): retrain it to get "
            "this plot."
            if held_out is None
            else f"Not stored: {len(focus.classes or [])} classes make too large a matrix for the manifest."
        )
        described = f"On the {held_out.rows:,} rows held out from training." if held_out is not None else ""
        title = "Confusion matrix" if focus.task == "classification" else "Residuals"
        parts.append(_section(f"{title} of {which}", _note(described), evaluation or missing))
        importance = importance_plot(focus)
        importance_note = (
            _note(
                f"Permutation importance: each input column shuffled {held_out.importance_repeats} times on "
                f"{held_out.importance_rows:,} held-out rows; the bar is the mean drop in "
                f"{_e(held_out.importance_metric)}, the whisker its standard deviation. Near zero: the model does "
                "not rely on the column (or another column carries the same information)."
            )
            if importance and held_out is not None
            else _note(
                "Not computed for this version ([evaluation] importance_repeats = 0, or trained before it was stored)."
            )
        )
        parts.append(_section(f"Feature importance of {which}", importance or "", importance_note))
        parts.append(_section(f"Pipeline of {which}", _pipeline_note(focus)))
        parts.append(_section(f"Data contract of {which}", _contract_table(focus)))
    parts.append(monitoring_section(data))
    parts.append(_section("Versions (newest first)", _versions_table(data)))
    if data.unreadable:
        parts.append(
            _note("Unreadable versions: " + _e("; ".join(f"v{v}: {why}" for v, why in data.unreadable.items())))
        )
    parts.append(_section("Retrain runs (newest first)", _runs_table(data)))
    title = f"{data.name}: model report"
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body><main>"
        + "\n".join(parts)
        + "</main></body></html>\n"
    )


def _run_times(records: list[MonitoringRecord]) -> list[Any]:
    from datetime import datetime

    return [datetime.fromisoformat(record.created_at.replace("Z", "+00:00")) for record in records]


def drift_over_time(records: list[MonitoringRecord]) -> str | None:
    """PSI of each input column per monitor run, with the alarm threshold."""
    runs = [(record, record.drift) for record in records if record.drift is not None and record.drift.rows]
    if not runs:
        return None
    figure = _figure(7.5, 3.4)
    axes = figure.subplots()
    times = _run_times([record for record, _ in runs])
    columns = sorted({column for _, drift in runs for column in drift.columns})
    for column in columns:
        values = [drift.columns[column].psi if column in drift.columns else float("nan") for _, drift in runs]
        axes.plot(times, values, marker="o", markersize=3, linewidth=1.2, label=column)
    threshold = runs[-1][0].psi_threshold
    axes.axhline(threshold, color="#e76f51", linestyle="--", linewidth=1, label="alarm threshold")
    axes.set_ylabel("PSI against the training baseline")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize=7, frameon=False, ncol=2)
    figure.autofmt_xdate()
    return _svg_image(figure, "drift of each input column per monitor run")


def live_metric_over_time(records: list[MonitoringRecord]) -> str | None:
    """The live metric on labelled rows per monitor run, next to the serving version's held-out value."""
    runs = [(record, record.quality) for record in records if record.quality is not None]
    if not runs:
        return None
    figure = _figure(7.5, 3.0)
    axes = figure.subplots()
    times = _run_times([record for record, _ in runs])
    live = [quality.live for _, quality in runs]
    axes.plot(times, live, marker="o", color=CHALLENGER, label="live (labelled rows)")
    held_out = [float("nan") if quality.held_out is None else quality.held_out for _, quality in runs]
    axes.plot(times, held_out, linestyle="--", color=CHAMPION, label="held-out")
    for time, value, (_, quality) in zip(times, live, runs, strict=True):
        axes.annotate(str(quality.labels), (time, value), textcoords="offset points", xytext=(0, 6), fontsize=7)
    axes.set_ylabel(runs[-1][1].metric)
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize=8, frameon=False)
    figure.autofmt_xdate()
    return _svg_image(figure, "live metric on labelled rows per monitor run")


def monitoring_section(data: ReportData) -> str:
    records = data.monitoring
    if not records:
        return _section(
            "Monitoring: live traffic against the training baseline",
            _note("No monitor run yet (the monitor function runs on MonitorSchedule; locally: make demo-loop)."),
        )
    last = records[-1]
    facts = [
        f"Last run {_e(last.created_at)} on v{last.version}: {last.captured_rows:,} captured rows "
        f"({_e(last.window[0])} to {_e(last.window[1])}), {last.labels_matched} labelled, "
        f"{last.unmatched_labels} labels matching no capture."
    ]
    if last.alarms:
        facts.append("Alarms: " + _e("; ".join(last.alarms)))
    drift = drift_over_time(records)
    quality = live_metric_over_time(records)
    return _section(
        "Monitoring: live traffic against the training baseline",
        _note(" ".join(facts)),
        drift or _note("No drift computed yet (no captured rows of a version with a baseline)."),
        _note(
            "PSI per input column and run: below 0.1 no shift, 0.1-0.2 moderate, above the dashed line the Drift "
            "alarm fires."
        ),
        quality or _note("No labelled rows yet: send ground truth to POST /feedback."),
        _note("Numbers above the points: labelled rows behind each live value.") if quality else "",
    )


def report_html(store: ModelStore, name: str, **options: Any) -> str:
    return render(gather(store, name, **options))
