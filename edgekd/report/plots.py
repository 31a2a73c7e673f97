"""The HTML report's plots, drawn with matplotlib (no pyplot) and embedded as PNG data URIs; each
lists the JSON pointers of the values it draws in ``data-sources``."""

from __future__ import annotations

import base64
import io
import math
from html import escape
from typing import Any

from edgekd.report.page import Page, has, pointer, shown_models
from edgekd.report.schema import MODELS

COLORS = {"teacher": "#6b7280", "student_fp32": "#2563eb", "student_int8": "#16a34a"}
MAX_CLASSES_PLOTTED = 40


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _figure(page: Page, fig: Any, caption: str, sources: list[str]) -> None:
    page.add(
        f'<figure data-sources="{escape(" ".join(sources))}"><img alt="{escape(caption)}" '
        f'src="{_png(fig)}"><figcaption>{escape(caption)}</figcaption></figure>'
    )


def _new_figure(width: float = 6.4, height: float = 3.8, cols: int = 1) -> tuple[Any, Any]:
    from matplotlib.figure import Figure  # no pyplot: no global state, renders with Agg

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, cols)
    return fig, axes


def _log_x(ax: Any) -> None:
    """A log latency axis labelled with plain numbers (major ticks only)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _latency_axes(ax: Any, low: float, high: float, xlabel: str, ylabel: str, title: str) -> None:
    """A latency x axis, logarithmic when the latencies drawn span over 20×; labels and legend."""
    if low > 0 and high / low > 20:
        _log_x(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")


def accuracy_latency(page: Page) -> None:
    r = page.report
    fig, ax = _new_figure()
    sources = [pointer("target", "p90_budget_ms")]
    for m in shown_models(r):
        x, y = r["latency_ms"][m]["p90"], 100 * r["accuracy"][m]
        ax.scatter([x], [y], s=70, color=COLORS[m], label=m, zorder=3)
        ax.annotate(m, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=9)
        sources += [pointer("latency_ms", m, "p90"), pointer("accuracy", m)]
    budget = r["target"]["p90_budget_ms"]
    ax.axvline(budget, color="#dc2626", ls="--", label=f"p90 budget {budget:g} ms")
    if has(r, "config", "max_accuracy_drop"):
        floor = 100 * r["accuracy"]["teacher"] - r["config"]["max_accuracy_drop"]
        ax.axhline(floor, color="#d97706", ls=":", label=f"accuracy floor {floor:.2f} %")
        sources.append(pointer("config", "max_accuracy_drop"))
    lat = [r["latency_ms"][m]["p90"] for m in shown_models(r)] + [budget]
    _latency_axes(ax, min(lat), max(lat), "p90 latency, ms (batch 1)", "top-1 accuracy, %",
                  "Accuracy vs p90 latency")  # fmt: skip
    where = "; ".join(sorted({r["latency_ms"][m]["where"] for m in shown_models(r)}))
    _figure(page, fig, f"Up and to the left is better. Latency {where}.", sources)


def latency_cdf(page: Page) -> None:
    r = page.report
    q = r.get("latency_quantiles")
    if not q or not q.get("ms"):
        page.add('<p class="note">No latency distribution in this report (recorded by newer '
                 "edgekd versions: rerun <code>edgekd validate</code>).</p>")  # fmt: skip
        return
    fig, ax = _new_figure()
    pcts = [p / 100 for p in q["percentiles"]]
    sources = [pointer("latency_quantiles", "percentiles")]
    for m, values in q["ms"].items():
        ax.step(values, pcts, where="post", color=COLORS.get(m), label=m)
        sources.append(pointer("latency_quantiles", "ms", m))
    budget = r["target"]["p90_budget_ms"]
    ax.axhline(0.9, color="#9ca3af", lw=0.8)
    ax.axvline(budget, color="#dc2626", ls="--", label=f"p90 budget {budget:g} ms")
    lows = [v[0] for v in q["ms"].values() if v[0] > 0]
    high = max(budget, *(v[-1] for v in q["ms"].values()))
    _latency_axes(ax, min(lows, default=0.0), high, "latency, ms (batch 1)",
                  "fraction of queries ≤ x", "Latency distribution (CDF)")  # fmt: skip
    _figure(page, fig, "Cumulative distribution of single-query latency per artifact.", sources)


def per_class(page: Page) -> None:
    r = page.report
    pc = r.get("per_class_accuracy")
    if not pc:
        page.add('<p class="note">No per-class accuracy in this report (recorded by newer '
                 "edgekd versions: rerun <code>edgekd validate</code>).</p>")  # fmt: skip
        return
    models = [m for m in MODELS if m in pc]
    classes = list(range(len(pc["classes"])))
    deployed = r["student"]["deployed"]
    title = "Per-class accuracy"
    if len(classes) > MAX_CLASSES_PLOTTED:

        def loss(c: int) -> float:
            t, s = pc["teacher"][c], pc[deployed][c]
            return -math.inf if t is None or s is None else t - s

        classes = sorted(sorted(classes, key=loss, reverse=True)[:MAX_CLASSES_PLOTTED])
        title += f" ({MAX_CLASSES_PLOTTED} classes where {deployed} trails the teacher most)"
    fig, ax = _new_figure(width=min(14.0, max(6.4, 0.25 * len(classes) * len(models))))
    width = 0.8 / len(models)
    for i, m in enumerate(models):
        xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(classes))]
        ys = [100 * (pc[m][c] or 0.0) for c in classes]
        ax.bar(xs, ys, width=width, color=COLORS[m], label=m)
    ax.set_xticks(range(len(classes)), [pc["classes"][c] for c in classes], rotation=45,
                  ha="right", fontsize=8)  # fmt: skip
    ax.set_ylabel("top-1 accuracy, %")
    low = max(0.0, min(100 * (pc[m][c] or 0) for m in models for c in classes) - 5)
    ax.set_ylim(low, 100 + (100 - low) * 0.12)  # headroom for the legend
    ax.set_yticks([t for t in ax.get_yticks() if low <= t <= 100])
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", ncols=len(models))
    _figure(page, fig, "Teacher vs student accuracy within each true class.",
            [pointer("per_class_accuracy", m) for m in models])  # fmt: skip
    if len(pc["classes"]) <= MAX_CLASSES_PLOTTED:
        rows = [
            [page.v("text", "per_class_accuracy", "classes", c, tag="th"),
             *(page.td("pct", "per_class_accuracy", m, c) for m in models)]
            for c in classes
        ]  # fmt: skip
        page.table(["class", *models], rows)


def sizes(page: Page) -> None:
    r = page.report
    models = [m for m in MODELS if m in r["model_mb"]]
    fig, ax = _new_figure(height=2.6)
    mbs = [r["model_mb"][m] for m in models]
    ax.barh(models, mbs, color=[COLORS[m] for m in models])
    for y, mb in enumerate(mbs):
        ax.annotate(f"{mb:.3f} MB", (mb, y), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=8)  # fmt: skip
    sources = [pointer("model_mb", m) for m in models]
    if has(r, "target", "max_model_mb"):
        budget = r["target"]["max_model_mb"]
        ax.axvline(budget, color="#dc2626", ls="--", label=f"model budget {budget:g} MB")
        ax.legend(fontsize=8, loc="lower right")
        sources.append(pointer("target", "max_model_mb"))
    ax.invert_yaxis()
    ax.set_xlabel("ONNX file size, MB (10^6 bytes)")
    ax.set_title("Model size")
    ax.grid(axis="x", alpha=0.3)
    _figure(page, fig, "Size of each exported ONNX file.", sources)


def training(page: Page) -> None:
    r = page.report
    stages = [(s, r["training"].get(s) or []) for s in ("distill", "qat")]
    if not any(h for _, h in stages):
        page.add('<p class="note">No training history (no epochs were run).</p>')
        return
    from matplotlib.ticker import MaxNLocator

    fig, (loss_ax, acc_ax) = _new_figure(width=9.6, height=3.4, cols=2)
    offset, sources = 0, []
    for (stage, history), color in zip(stages, ("#2563eb", "#16a34a"), strict=True):
        if not history:
            continue
        epochs = [offset + h["epoch"] for h in history]
        loss_ax.plot(epochs, [h["loss"] for h in history], "o-", ms=3, color=color, label=stage)
        if all("train_accuracy" in h for h in history):  # none without labelled samples
            acc_ax.plot(epochs, [100 * h["train_accuracy"] for h in history], "o--", ms=3,
                        color=color, alpha=0.6, label=f"{stage} train")  # fmt: skip
        if all("val_accuracy" in h for h in history):
            acc_ax.plot(epochs, [100 * h["val_accuracy"] for h in history], "o-", ms=3,
                        color=color, label=f"{stage} val")  # fmt: skip
        if offset:
            for ax in (loss_ax, acc_ax):
                ax.axvline(offset + 0.5, color="#9ca3af", lw=0.8)
        offset = epochs[-1]
        sources.append(pointer("training", stage))
    baseline = r["training"].get("baseline")
    if baseline:  # the control arm, over the distillation epochs
        epochs = [h["epoch"] for h in baseline]
        loss_ax.plot(epochs, [h["loss"] for h in baseline], "s:", ms=3, color="#9ca3af",
                     label="baseline (labels only)")  # fmt: skip
        if all("val_accuracy" in h for h in baseline):
            acc_ax.plot(epochs, [100 * h["val_accuracy"] for h in baseline], "s:", ms=3,
                        color="#9ca3af", label="baseline val")  # fmt: skip
        sources.append(pointer("training", "baseline"))
    loss_ax.set_yscale("log")
    loss_ax.set_title("Training loss")
    acc_ax.set_title("Accuracy")
    for ax, label in ((loss_ax, "loss (log)"), (acc_ax, "accuracy, %")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch (distillation, then QAT)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _figure(page, fig, "Per-epoch loss and accuracy: float distillation, then quantization-aware "
            "fine-tuning.", sources)  # fmt: skip
