"""`genloom report`: one self-contained HTML page with plots, from the analytics views.

Plots are matplotlib figures (Agg backend, no display needed) embedded as base64 PNGs,
and the CSS is inline, so the file can be mailed or opened offline. Each section that
has no data says what is missing and which command produces it, instead of failing.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import html
import io
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from genloom import __version__
from genloom.datasets.items import decode_image  # noqa: F401  (the one image decoder; tests import it here)
from genloom.db.queries import report as queries

# Colour-blind-safe palette (Okabe–Ito), cycled per model/run.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
MAX_LATENCY_ROWS = 200_000  # enough for a smooth histogram; bounded cost on big logs
MAX_RUN_CURVES = 9
MAX_SAMPLE_MODELS = 6
SAMPLES_PER_GRID = 64


@dataclasses.dataclass
class Report:
    html: str
    plots: list[str]  # the id of each embedded plot, in page order
    missing: dict[str, str]  # section → what is missing and how to get it


# --------------------------------------------------------------------------- figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: the report runs on servers and in CI
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "figure.dpi": 100,
            "savefig.dpi": 110,
            "font.size": 10,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.25,
            "axes.prop_cycle": plt.cycler(color=PALETTE),
            "figure.constrained_layout.use": True,
        }
    )
    return plt


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(plot_id: str, b64: str, alt: str) -> str:
    return (
        f'<figure><img id="{plot_id}" class="plot" alt="{html.escape(alt)}" src="data:image/png;base64,{b64}"></figure>'
    )


def _missing(text: str) -> str:
    return f'<p class="missing">{text}</p>'


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    """columns: (key, header, format spec or '' for str)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in columns)
    body = []
    for row in rows:
        cells = []
        for key, _, spec in columns:
            value = row.get(key)
            if value is None:
                text, cls = "–", "num"
            elif spec and isinstance(value, (int, float)):
                text, cls = format(value, spec), "num"
            else:
                text, cls = str(value), ("num" if isinstance(value, (int, float)) else "")
            cells.append(f'<td class="{cls}">{html.escape(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# --------------------------------------------------------------------------- sections


def _overview(session: Session, since: dt.datetime | None) -> str:
    t = queries.period_totals(session, since=since or dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc))[0]
    error_rate = f"{t['errors'] / t['generations']:.1%}" if t["generations"] else "–"
    score = f"{t['mean_score']:.2f}" if t["mean_score"] is not None else "–"
    cards = [
        ("generations", f"{t['generations']:,}"),
        ("error rate", error_rate),
        ("sessions", f"{t['sessions']:,}"),
        ("feedback", f"{t['feedback']:,}"),
        ("mean score", score),
        ("documents", f"{t['documents']:,}"),
        ("datasets", f"{t['datasets']:,}"),
        ("models", f"{t['models']:,}"),
        ("runs", f"{t['runs']:,}"),
    ]
    return (
        '<div class="cards">'
        + "".join(f'<div class="card"><div class="value">{v}</div><div class="label">{k}</div></div>' for k, v in cards)
        + "</div>"
    )


def _usage(session, plt, since, plots, missing) -> str:
    rows = queries.model_daily(session, since=(since or dt.datetime(1970, 1, 1)).date())
    stats = queries.model_stats(session)
    if not rows:
        missing["usage"] = 'no generations yet: run `genloom ask "QUESTION" --collection NAME` (or `genloom demo`)'
        return _missing(
            'No generations yet. Ask something (<code>genloom ask "…" --collection demo</code>) and this '
            "section shows volume, errors and feedback per model per day."
        )
    models = sorted({r["model_name"] for r in rows})
    days = sorted({r["day"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for i, model in enumerate(models[:8]):
        mine = [r for r in rows if r["model_name"] == model]
        axes[0].plot(
            [r["day"] for r in mine],
            [r["generations"] for r in mine],
            marker="o",
            label=model,
            color=PALETTE[i % len(PALETTE)],
        )
        scored = [r for r in mine if r["mean_score"] is not None]
        if scored:
            axes[1].plot(
                [r["day"] for r in scored],
                [r["mean_score"] for r in scored],
                marker="o",
                label=model,
                color=PALETTE[i % len(PALETTE)],
            )
    axes[0].set_title("generations per day")
    axes[1].set_title("mean feedback score per day (1–5)")
    axes[1].set_ylim(0.8, 5.2)
    import matplotlib.dates as mdates
    from matplotlib.ticker import MaxNLocator

    axes[0].yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylim(bottom=0)
    for ax in axes:
        # Whole days on the axis: hourly ticks between two daily points mean nothing.
        if (days[-1] - days[0]).days <= 14:
            ax.set_xticks(days)
        else:
            ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=3, maxticks=10))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%b %d"))
        ax.tick_params(axis="x", rotation=30)
    axes[0].legend(fontsize=8, loc="best")
    plots.append("plot-usage")
    body = _img("plot-usage", _png(fig), "generations and mean feedback score per day, per model")
    body += "<h3>Per model, all time (v_model_stats)</h3>" + _table(
        stats,
        [
            ("model", "model", ""),
            ("model_revision", "revision", ""),
            ("generations", "generations", ","),
            ("error_rate", "errors", ".1%"),
            ("feedback_rate", "with feedback", ".0%"),
            ("mean_score", "score", ".2f"),
            ("thumbs_up_share", "thumbs-up share", ".0%"),
            ("retrieval_ms_p50", "retrieval p50 ms", ".0f"),
            ("generation_ms_p50", "generation p50 ms", ".0f"),
            ("total_ms_p50", "total p50 ms", ".0f"),
            ("total_ms_p95", "total p95 ms", ".0f"),
            ("tokens_per_s", "tokens/s", ".0f"),
        ],
    )
    return body


def _latency(session, plt, since, plots, missing) -> str:
    rows = queries.latencies(
        session, since=since or dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc), n=MAX_LATENCY_ROWS
    )
    if not rows:
        missing["latency"] = "no successful generations in the period"
        return _missing("No successful generations in the period, so no latencies to plot.")
    models = sorted({r["model_name"] for r in rows})[:6]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, column in zip(axes, ("retrieval_ms", "generation_ms", "total_ms")):
        values_all = np.array([r[column] for r in rows if r[column] is not None and r[column] > 0], dtype=float)
        if values_all.size == 0:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="#777")
        else:
            # Log-spaced bins: latencies span orders of magnitude (cache hits vs cold loads).
            lo, hi = values_all.min(), values_all.max()
            # A narrow range (or a single call) gets linear bins around it, not a degenerate axis.
            bins = np.geomspace(lo, hi * 1.0001, 30) if hi > lo * 1.5 else np.linspace(lo * 0.9, hi * 1.1 + 1e-9, 21)
            for i, model in enumerate(models):
                values = [
                    r[column] for r in rows if r["model_name"] == model and r[column] is not None and r[column] > 0
                ]
                if values:
                    ax.hist(values, bins=bins, alpha=0.6, label=model, color=PALETTE[i % len(PALETTE)])
            if hi > lo * 1.5:
                ax.set_xscale("log")
            else:
                ax.ticklabel_format(axis="x", style="plain", useOffset=False)
            p50, p95 = np.percentile(values_all, [50, 95])
            ax.axvline(p50, color="#333", linestyle="--", linewidth=1)
            ax.axvline(p95, color="#D55E00", linestyle=":", linewidth=1.2)
            ax.text(
                0.98,
                0.95,
                f"p50 {p50:.0f} ms\np95 {p95:.0f} ms",
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize=8,
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
            )
        ax.set_title(column.replace("_ms", "") + " latency (ms)")
        ax.set_ylabel("generations")
    axes[0].legend(fontsize=8, loc="upper left")
    plots.append("plot-latency")
    return _img("plot-latency", _png(fig), "latency histograms: retrieval, generation, total")


def _retrieval(session, plt, plots, missing) -> str:
    docs = queries.cited_documents(session)
    never = queries.never_cited_documents(session)
    never_count = queries.never_cited_count(session)
    if not docs:
        missing["retrieval"] = "no answer has cited a document yet"
        body = _missing("No answer has cited a document yet.")
    else:
        import matplotlib
        import matplotlib.cm as cm
        import matplotlib.colors as mcolors

        fig, ax = plt.subplots(figsize=(10, 0.35 * len(docs) + 1.2))
        labels = [f"{d['collection']}/{(d['title'] or d['external_id'])[:40]} v{d['document_version']}" for d in docs][
            ::-1
        ]
        scores = [d["mean_feedback_score"] for d in docs][::-1]
        norm = mcolors.Normalize(1, 5)
        cmap = matplotlib.colormaps["RdYlGn"]
        colors = [cmap(norm(s)) if s is not None else "#bbbbbb" for s in scores]
        ax.barh(labels, [d["citations"] for d in docs][::-1], color=colors)
        ax.set_xlabel("citations")
        ax.set_title("most-cited documents (colour: mean feedback of answers citing them; grey: none)")
        fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="mean score", shrink=0.8)
        plots.append("plot-citations")
        body = _img("plot-citations", _png(fig), "most-cited documents coloured by mean feedback")
        body += (
            "<h3>Most cited: cited by the answer vs retrieved into the prompt</h3>"
            "<p>A citation is a source the answer names with its [n] marker; a retrieval is any source given to "
            "the model. Feedback is credited to cited sources only.</p>"
            + _table(
                docs,
                [
                    ("collection", "collection", ""),
                    ("title", "title", ""),
                    ("document_version", "version", ""),
                    ("citations", "cited", ","),
                    ("retrievals", "retrieved", ","),
                    ("answers", "answers citing", ","),
                    ("mean_feedback_score", "mean score", ".2f"),
                ],
            )
        )
    if never:
        body += f"<h3>Never cited ({never_count} current documents; first {len(never)})</h3>" + _table(
            never,
            [
                ("collection", "collection", ""),
                ("external_id", "id", ""),
                ("document_version", "version", ""),
                ("title", "title", ""),
                ("retrievals", "retrieved, not cited", ","),
            ],
        )
    return body


def _training(session, plt, plots, missing) -> str:
    runs = queries.loss_runs(session, n=MAX_RUN_CURVES)
    if not runs:
        missing["training"] = "no training run has logged a loss: run `genloom train vae --dataset digits`"
        return _missing(
            "No training run has logged a loss yet (<code>genloom train vae --dataset digits --steps 200</code>)."
        )
    runs = runs[::-1]
    points = queries.loss_points(session, ids=[r["id"] for r in runs])
    cols = min(3, len(runs))
    nrows = -(-len(runs) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 2.9 * nrows), squeeze=False)
    for ax, run in zip(axes.flat, runs):
        mine = [p for p in points if p["run_id"] == run["id"]]
        for i, name in enumerate(sorted({p["name"] for p in mine})):
            series = [p for p in mine if p["name"] == name]
            ax.plot(
                [p["step"] for p in series],
                [p["value"] for p in series],
                label=name,
                color=PALETTE[i % len(PALETTE)],
                linewidth=1.3,
            )
        ax.set_title(f"run {run['id']} · {run['label']} ({run['status']})", fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(runs) :]:
        ax.set_visible(False)
    plots.append("plot-training")
    return _img("plot-training", _png(fig), "training loss curves per run")


def _samples(session, plt, plots, missing) -> str:
    # Per model: the synthetic image items of its latest sampling run when it stored them
    # (`genloom sample … --store`), else the PNG grid its latest sampling run wrote, if
    # that file is on this machine.
    stored = queries.stored_sample_models(session)
    grids = queries.sample_grid_runs(session)
    entries = {e["model_id"]: {**e, "source": "items"} for e in stored}
    for g in grids:
        if g["model_id"] not in entries and g["out"] and Path(g["out"]).is_file():
            entries[g["model_id"]] = {**g, "source": "file"}
    if not entries:
        missing["samples"] = "no image samples: run `genloom sample MODEL --n 64 --store --into NAME`"
        return _missing(
            "No image model has samples yet "
            "(<code>genloom sample demo-vae --n 64 --store --into digits-synthetic</code>)."
        )
    body = '<div class="grid-row">'
    for k, entry in enumerate(sorted(entries.values(), key=lambda e: e["model_ref"])[:MAX_SAMPLE_MODELS]):
        title = f"{entry['model_ref']} ({entry['architecture']}) · run {entry['run_id']}"
        plot_id = f"plot-samples-{k}"
        if entry["source"] == "file":
            data = Path(entry["out"]).read_bytes()
            if data[:8] != b"\x89PNG\r\n\x1a\n":
                continue
            plots.append(plot_id)
            body += (
                f'<figure><img id="{plot_id}" class="plot sample" alt="latest samples of {html.escape(entry["model_ref"])}" '
                f'src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'
                f"<figcaption>{html.escape(title)} (grid written by the run)</figcaption></figure>"
            )
            continue
        items = queries.synthetic_images(session, m=entry["model_id"], r=entry["run_id"], n=SAMPLES_PER_GRID)
        images = [img for img in (decode_image(i["payload"], i["shape"], i["dtype"]) for i in items) if img is not None]
        if not images:
            continue
        side = int(np.ceil(np.sqrt(len(images))))
        fig, axes = plt.subplots(
            side, side, figsize=(3.2, 3.4), squeeze=False, layout="none", gridspec_kw={"wspace": 0.04, "hspace": 0.04}
        )
        fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.9)
        for ax in axes.flat:
            ax.axis("off")
        for ax, img in zip(axes.flat, images):
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        fig.suptitle(title, fontsize=9)
        plots.append(plot_id)
        body += _img(plot_id, _png(fig), f"latest samples of {entry['model_ref']}")
    body += "</div>"
    if not any(p.startswith("plot-samples-") for p in plots):
        missing["samples"] = "image samples could not be decoded (payload/shape/dtype, or the grid PNG)"
        return _missing("Image samples exist but none could be decoded from payload, shape and dtype.")
    return body


def _leaderboards(session, plt, plots, missing) -> str:
    rows = queries.leaderboards(session)
    if not rows:
        missing["leaderboards"] = (
            "no succeeded run has final metrics for a model on a dataset: run `genloom eval model`"
        )
        return _missing(
            "No model has final metrics on a dataset yet (<code>genloom eval model demo-vae --dataset digits</code>)."
        )
    boards: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        boards.setdefault((r["dataset_ref"], r["metric"]), []).append(r)
    shown = list(boards.items())[:9]
    cols = min(3, len(shown))
    nrows = -(-len(shown) // cols)
    fig, axes = plt.subplots(
        nrows, cols, figsize=(4.2 * cols, max(2.2, 0.45 * max(len(b) for _, b in shown) + 1.3) * nrows), squeeze=False
    )
    for ax, ((dataset, metric), board) in zip(axes.flat, shown):
        board = board[:10]
        labels = [b["model_ref"] for b in board][::-1]
        values = [b["value"] for b in board][::-1]
        colors = [PALETTE[2] if b["rank"] == 1 else PALETTE[0] for b in board][::-1]
        ax.barh(labels, values, color=colors, height=0.6)
        arrow = "higher is better" if board[0]["higher_is_better"] else "lower is better"
        ax.set_title(f"{dataset} · {metric} ({arrow})", fontsize=9)
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:.4g}", va="center", fontsize=8)
    for ax in list(axes.flat)[len(shown) :]:
        ax.set_visible(False)
    plots.append("plot-leaderboards")
    body = _img("plot-leaderboards", _png(fig), "metric leaderboards per dataset")
    body += _table(
        rows[:60],
        [
            ("dataset_ref", "dataset", ""),
            ("metric", "metric", ""),
            ("rank", "rank", ""),
            ("model_ref", "model", ""),
            ("value", "value", ".5g"),
            ("run_id", "run", ""),
        ],
    )
    return body


def _datasets(session, plt, plots, missing) -> str:
    rows = queries.dataset_versions(session)
    if not rows:
        missing["datasets"] = "no datasets: run `genloom datasets import digits --name digits`"
        return _missing("No datasets yet (<code>genloom datasets import digits --name digits</code>).")
    fig, ax = plt.subplots(figsize=(10, 0.38 * len(rows) + 1.3))
    labels = [r["ref"] for r in rows][::-1]
    left = np.zeros(len(rows))
    for i, origin in enumerate(("real", "synthetic", "augmented")):
        values = np.array([r[origin] for r in rows][::-1], dtype=float)
        if origin == "augmented" and not values.any():
            continue
        ax.barh(labels, values, left=left, label=origin, color=PALETTE[i])
        left += values
    ax.set_xlabel("items")
    ax.set_title("real vs synthetic items per dataset version")
    ax.legend(fontsize=8, loc="lower right")
    plots.append("plot-datasets")
    body = _img("plot-datasets", _png(fig), "real vs synthetic items per dataset version")
    for r in rows:
        r["models_sampled_in"] = ", ".join(r["models_sampled_in"] or []) or None
    body += _table(
        rows,
        [
            ("ref", "version", ""),
            ("parent", "parent", ""),
            ("items", "items", ","),
            ("real", "real", ","),
            ("synthetic", "synthetic", ","),
            ("models_sampled_in", "sampled from", ""),
        ],
    )
    return body


# --------------------------------------------------------------------------- page

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;color:#1d2329}
header{background:#16324f;color:#fff;padding:18px 32px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;opacity:.8;font-size:13px}
main{max-width:1280px;margin:0 auto;padding:8px 32px 40px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:14px 22px;margin:18px 0}
h2{font-size:17px;margin:4px 0 10px;color:#16324f} h3{font-size:14px;margin:14px 0 6px;color:#444}
figure{margin:6px 0} img.plot{max-width:100%;height:auto} img.sample{max-width:340px;image-rendering:pixelated}
figcaption{font-size:12px;color:#555}
.grid-row{display:flex;flex-wrap:wrap;gap:10px} .grid-row figure{margin:0}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#eef3f8;border-radius:6px;padding:10px 16px;min-width:92px}
.card .value{font-size:20px;font-weight:600} .card .label{font-size:12px;color:#555}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0;width:100%}
th,td{padding:4px 8px;border-bottom:1px solid #e5e8ec;text-align:left;overflow-wrap:anywhere} th{background:#f0f2f5;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.missing{color:#8a5a00;background:#fff8e6;border-left:3px solid #e6a700;padding:8px 12px;margin:6px 0}
code{background:#eef0f3;padding:1px 4px;border-radius:3px}
footer{color:#777;font-size:12px;text-align:center;padding:12px}
"""


def build_report(session: Session, *, since: dt.datetime | None = None) -> Report:
    """Query the views, draw the plots and return the page (the caller writes it)."""
    plt = _pyplot()
    plots: list[str] = []
    missing: dict[str, str] = {}
    sections = [
        ("Overview", _overview(session, since)),
        ("Volume and feedback per model", _usage(session, plt, since, plots, missing)),
        ("Latency", _latency(session, plt, since, plots, missing)),
        ("Retrieval: what answers cite", _retrieval(session, plt, plots, missing)),
        ("Training loss curves", _training(session, plt, plots, missing)),
        ("Latest samples of each image model", _samples(session, plt, plots, missing)),
        ("Leaderboards", _leaderboards(session, plt, plots, missing)),
        ("Datasets: real vs synthetic", _datasets(session, plt, plots, missing)),
    ]
    now = dt.datetime.now(dt.timezone.utc)
    period = f"since {since:%Y-%m-%d}" if since else "all time"
    database = queries.database_name(session)
    body = "".join(
        f'<section id="s{i}"><h2>{html.escape(title)}</h2>{content}</section>'
        for i, (title, content) in enumerate(sections)
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>genloom report · {html.escape(database)}</title><style>{CSS}</style></head>
<body><header><h1>genloom report</h1><p>database <b>{html.escape(database)}</b> · {period} ·
generated {now:%Y-%m-%d %H:%M} UTC · genloom {__version__} · every figure here is one SELECT away: see docs/analytics.md</p></header>
<main>{body}</main><footer>{len(plots)} plots · {len(missing)} sections without data</footer></body></html>
"""
    return Report(html=page, plots=plots, missing=missing)
