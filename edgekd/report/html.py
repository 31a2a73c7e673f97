"""report.html: one self-contained page for people — the verdict first, then plots and tables.

Styles are inline and every plot is a PNG data URI, so the file opens offline and can be mailed
or uploaded as a CI artifact. Every figure shown comes from report.json: each table cell, list
item or span holding one carries ``data-json``, the JSON pointer of the value it shows, and each
plot lists the pointers it draws in ``data-sources``.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Iterable
from html import escape
from typing import Any

from edgekd.report.schema import MODELS

COLORS = {"teacher": "#6b7280", "student_fp32": "#2563eb", "student_int8": "#16a34a"}
MAX_CLASSES_PLOTTED = 40
GATE_STATUS = {"passed": ("passed", "ok"), "failed": ("failed", "bad"),
               "skipped": ("not checked", "skip")}  # fmt: skip
MEASURED_ON = {True: "the target", False: "this host, not the target", None: "—"}

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#111827;
margin:0 auto;max-width:1040px;padding:0 20px 40px;background:#fff}
h1{font-size:22px;margin:0 0 6px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #e5e7eb;
padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
.verdict{padding:16px 20px;margin:20px 0;border-radius:8px;border:2px solid}
.pass{background:#f0fdf4;border-color:#16a34a}.fail{background:#fef2f2;border-color:#dc2626}
.badge{display:inline-block;padding:1px 10px;border-radius:12px;color:#fff;font-weight:600}
.pass .badge{background:#16a34a}.fail .badge{background:#dc2626}
table{border-collapse:collapse;margin:8px 0;font-size:14px}
th,td{border:1px solid #e5e7eb;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f9fafb}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.ok{color:#15803d;font-weight:600}td.bad{color:#b91c1c;font-weight:600}
td.skip{color:#92400e;font-weight:600}
figure{margin:16px 0}figure img{max-width:100%;border:1px solid #e5e7eb}
figcaption{color:#4b5563;font-size:13px}code{font-size:13px}.note{color:#4b5563}
"""

Formatter = Callable[[Any], str]
FORMATS: dict[str, Formatter] = {
    "pct": lambda v: f"{100 * v:.2f} %",
    "ms": lambda v: f"{v:.3f}",
    "mb": lambda v: f"{v:.3f}",
    "int": lambda v: f"{v:,}",
    "sci": lambda v: f"{v:.2e}",
    "signed": lambda v: f"{v:+.2e}",
    "cos": lambda v: f"{v:.6f}",
    "s": lambda v: f"{v:.1f}",
    "g": lambda v: f"{v:g}",
    "pt": lambda v: f"{v:+.2f}",
    "text": str,
}


def pointer(*parts: str | int) -> str:
    """The JSON pointer (RFC 6901) of a value in the report."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def resolve(report: Any, ptr: str) -> Any:
    """The value at JSON pointer ``ptr``."""
    value = report
    for part in ptr.split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def _has(report: dict[str, Any], *parts: str | int) -> bool:
    try:
        return resolve(report, pointer(*parts)) is not None
    except (KeyError, IndexError, TypeError):
        return False


class Page:
    """Builds the HTML; ``v`` renders one report value with its pointer."""

    def __init__(self, report: dict[str, Any]):
        self.report = report
        self.parts: list[str] = []

    def v(self, kind: str, *path: str | int, tag: str = "span") -> str:
        ptr = pointer(*path)
        value = resolve(self.report, ptr)
        text = "—" if value is None else FORMATS[kind](value)
        cls = ' class="num"' if kind != "text" and tag == "td" else ""
        return f'<{tag}{cls} data-json="{escape(ptr)}">{escape(text)}</{tag}>'

    def td(self, kind: str, *path: str | int) -> str:
        return self.v(kind, *path, tag="td")

    def add(self, *html: str) -> None:
        self.parts.extend(html)

    def table(self, header: Iterable[str] | None, rows: Iterable[Iterable[str]]) -> None:
        """``rows`` of ready-made cells (``td``/``_label`` strings); header texts escaped."""
        head = "".join(f"<th>{escape(h)}</th>" for h in header or ())
        body = "".join("<tr>" + "".join(r) + "</tr>" for r in rows)
        thead = f"<thead><tr>{head}</tr></thead>" if head else ""
        self.add(f"<table>{thead}<tbody>{body}</tbody></table>")


def _text(s: str, cls: str = "") -> str:
    """A cell of constant text (no report figures in it)."""
    return f"<td{f' class={cls!r}' if cls else ''}>{escape(s)}</td>"


def _label(s: str) -> str:
    """A row's label: a model, gate or quantity name (no report figures in it)."""
    return f'<th scope="row">{escape(s)}</th>'


def _models(report: dict[str, Any]) -> list[str]:
    return [m for m in MODELS if m in report["latency_ms"]]


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


def _verdict(page: Page) -> None:
    gates = page.report["gates"]
    ok = gates["passed"]
    page.add(
        f'<section class="verdict {"pass" if ok else "fail"}">'
        f'<h1><span class="badge">{"PASSED" if ok else "FAILED"}</span> '
        f"{page.v('text', 'student', 'label')} for <code>{page.v('text', 'target', 'name')}</code>"
        "</h1>"
        f"<p>Deploys <b>{page.v('text', 'student', 'deployed')}</b> ({page.v('text', 'target', 'runtime')}, "
        f"{page.v('text', 'target', 'precision')}). "
        + ("Every checked gate passed." if ok else "A gate failed: this student is not ready.")
        + "</p>"
    )
    rows = [
        [_label(g["name"]), _text(*GATE_STATUS[g["status"]]),
         page.td("text", "gates", "records", i, "evidence"),
         _text(MEASURED_ON[g["measured_on_target"]])]
        for i, g in enumerate(gates["records"])
    ]  # fmt: skip
    page.table(["gate", "result", "evidence", "measured on"], rows)
    page.add("</section>")


def _summary(page: Page) -> None:
    r = page.report
    rows = []
    for m in _models(r):
        student = "teacher" if m == "teacher" else "student"
        rows.append(
            [
                _label(m),
                page.td("pct", "accuracy", m),
                _text("—") if m == "teacher" else page.td("pct", "agreement", m),
                page.td("int", "params", student),
                page.td("mb", "model_mb", m),
                *(page.td("ms", "latency_ms", m, q) for q in ("p50", "p90", "p99", "mean")),
                page.td("int", "latency_ms", m, "n"),
            ]
        )
    page.add("<h2>Models</h2>")
    page.table(
        ["model", "accuracy", "agreement with teacher", "params", "file MB", "p50 ms", "p90 ms",
         "p99 ms", "mean ms", "queries"],
        rows,
    )  # fmt: skip
    page.add(
        f'<p class="note">Accuracy on {page.v("int", "data", "val_samples")} validation samples '
        f"({page.v('text', 'data', 'source')}); latency: batch 1, single stream, after warm-up.</p>"
    )


def _accuracy_latency(page: Page) -> None:
    r = page.report
    fig, ax = _new_figure()
    sources = [pointer("target", "p90_budget_ms")]
    for m in _models(r):
        x, y = r["latency_ms"][m]["p90"], 100 * r["accuracy"][m]
        ax.scatter([x], [y], s=70, color=COLORS[m], label=m, zorder=3)
        ax.annotate(m, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=9)
        sources += [pointer("latency_ms", m, "p90"), pointer("accuracy", m)]
    budget = r["target"]["p90_budget_ms"]
    ax.axvline(budget, color="#dc2626", ls="--", label=f"p90 budget {budget:g} ms")
    if _has(r, "config", "max_accuracy_drop"):
        floor = 100 * r["accuracy"]["teacher"] - r["config"]["max_accuracy_drop"]
        ax.axhline(floor, color="#d97706", ls=":", label=f"accuracy floor {floor:.2f} %")
        sources.append(pointer("config", "max_accuracy_drop"))
    lat = [r["latency_ms"][m]["p90"] for m in _models(r)] + [budget]
    if max(lat) / min(lat) > 20:
        _log_x(ax)
    ax.set_xlabel("p90 latency, ms (batch 1)")
    ax.set_ylabel("top-1 accuracy, %")
    ax.set_title("Accuracy vs p90 latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    where = "; ".join(sorted({r["latency_ms"][m]["where"] for m in _models(r)}))
    _figure(page, fig, f"Up and to the left is better. Latency {where}.", sources)


def _latency_cdf(page: Page) -> None:
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
    if lows and max(budget, *(v[-1] for v in q["ms"].values())) / min(lows) > 20:
        _log_x(ax)
    ax.set_xlabel("latency, ms (batch 1)")
    ax.set_ylabel("fraction of queries ≤ x")
    ax.set_title("Latency distribution (CDF)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    _figure(page, fig, "Cumulative distribution of single-query latency per artifact.", sources)


def _per_class(page: Page) -> None:
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


def _sizes(page: Page) -> None:
    r = page.report
    models = [m for m in MODELS if m in r["model_mb"]]
    fig, ax = _new_figure(height=2.6)
    mbs = [r["model_mb"][m] for m in models]
    ax.barh(models, mbs, color=[COLORS[m] for m in models])
    for y, mb in enumerate(mbs):
        ax.annotate(f"{mb:.3f} MB", (mb, y), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=8)  # fmt: skip
    sources = [pointer("model_mb", m) for m in models]
    if _has(r, "target", "max_model_mb"):
        budget = r["target"]["max_model_mb"]
        ax.axvline(budget, color="#dc2626", ls="--", label=f"model budget {budget:g} MB")
        ax.legend(fontsize=8, loc="lower right")
        sources.append(pointer("target", "max_model_mb"))
    ax.invert_yaxis()
    ax.set_xlabel("ONNX file size, MB (10^6 bytes)")
    ax.set_title("Model size")
    ax.grid(axis="x", alpha=0.3)
    _figure(page, fig, "Size of each exported ONNX file.", sources)


def _training(page: Page) -> None:
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


def _distillation_gain(page: Page) -> None:
    """The control arm (--baseline): what distillation bought over labels alone."""
    if "distillation_gain" not in page.report:
        return
    base = ("distillation_gain",)
    gain = page.report["distillation_gain"]
    same = {True: "yes", False: "no", None: "not comparable (an arm resumed partway)"}
    page.add("<h2>Distillation gain over the baseline</h2>",
             '<p class="note">The same student trained on labels alone (loss ce) from the same '
             "initial weights, with the same schedule, seed, batches and augmentation; both float "
             "students run in PyTorch on the validation split. The interval covers the sampling "
             "of validation samples for this one seed, not the spread across seeds.</p>")  # fmt: skip
    rows = [
        [_label("gain, pt"), page.td("pt", *base, "gain_pt")],
        [_label("95 % interval, pt"), page.td("pt", *base, "ci_pt", 0),
         page.td("pt", *base, "ci_pt", 1)],
        [_label("distilled accuracy"), page.td("pct", *base, "distilled_accuracy")],
        [_label("baseline accuracy"), page.td("pct", *base, "baseline_accuracy")],
        [_label("right only when distilled"), page.td("int", *base, "only_distilled_correct")],
        [_label("right only in the baseline"), page.td("int", *base, "only_baseline_correct")],
        [_label("validation samples"), page.td("int", *base, "samples")],
        [_label("resamples"), page.td("int", *base, "resamples")],
        [_label("same initial weights"), _text(same[gain["same_init"]])],
        [_label("same batches"), _text(same[gain["same_batches"]])],
        [_label("method"), page.td("text", *base, "method")],
    ]  # fmt: skip
    page.table(None, rows)


ESTIMATE_ROWS = (
    ("params", "parameters", "int"),
    ("macs", "multiply-accumulates", "int"),
    ("model_mb", "model MB", "mb"),
    ("memory_mb", "memory MB", "mb"),
    ("latency_ms", "estimated latency ms", "ms"),
)


def _sizing(page: Page) -> None:
    r = page.report
    sizing = r["student"]["sizing"]
    page.add("<h2>Student sizing</h2>",
             f"<p>Chosen: <b>{page.v('text', 'student', 'sizing', 'student')}</b>.</p><ul>")  # fmt: skip
    page.add(*(page.v("text", "student", "sizing", "reasons", i, tag="li")
               for i in range(len(sizing["reasons"]))), "</ul>")  # fmt: skip
    rows = [
        [_label(label), page.td(kind, "student", "sizing", "estimate", key)]
        for key, label, kind in ESTIMATE_ROWS
        if key in sizing["estimate"]
    ]
    rows += [
        [_label(label), page.td("int", "student", "sizing", key)]
        for key, label in (("considered", "candidates considered"), ("feasible", "feasible"),
                           ("max_params", "max params (budget and compression)"),
                           ("teacher_params", "teacher params"))
        if key in sizing
    ]  # fmt: skip
    page.table(["sizing estimate (before training)", "value"], rows)


def _quantization(page: Page) -> None:
    q = page.report["quantization"]
    if not q:
        return
    page.add("<h2>Quantization</h2>",
             f"<p>Scheme <code>{page.v('text', 'quantization', 'scheme')}</code>: "
             f"{page.v('text', 'quantization', 'scheme_description')}.</p>")  # fmt: skip
    cal = q.get("calibration", {})
    rows = [[_label("mode"), _text("post-training (calibration only)" if q.get("ptq")
                                  else "quantization-aware")]]  # fmt: skip
    if cal:
        rows += [
            [_label("calibration"), page.td("text", "quantization", "calibration", "method")],
            [
                _label("calibration samples"),
                page.td("int", "quantization", "calibration", "samples"),
            ],
            [_label("calibration seconds"), page.td("s", "quantization", "calibration", "seconds")],
        ]
    if "weight_bits" in q:
        rows += [
            [_label("weight bits"), page.td("int", "quantization", "weight_bits", "bits")],
            [_label("weight bits, why"), page.td("text", "quantization", "weight_bits", "why")],
        ]
    for i, _ in enumerate(q.get("keep_float", {}).get("layers", [])):
        rows.append(
            [_label("kept in float"), page.td("text", "quantization", "keep_float", "layers", i)]
        )
    for i, _ in enumerate(q.get("unquantizable", [])):
        rows.append(
            [_label("not quantizable"), page.td("text", "quantization", "unquantizable", i)]
        )
    page.table(None, rows)
    sens = q.get("sensitivity")
    if sens and sens.get("layers"):
        page.add("<h3>Sensitivity: each layer quantized alone</h3>",
                 f'<p class="note">{page.v("text", "quantization", "sensitivity", "method")}; on '
                 f"{page.v('int', 'quantization', 'sensitivity', 'samples')} samples. The float "
                 f"student: KL {page.v('sci', 'quantization', 'sensitivity', 'float_student', 'kl')},"
                 f" accuracy {page.v('pct', 'quantization', 'sensitivity', 'float_student', 'accuracy')}"
                 ".</p>")  # fmt: skip
        base = ("quantization", "sensitivity", "layers")
        page.table(["layer", "KL(teacher ‖ student)", "accuracy"], (
            [page.td("text", *base, i, "layer"), page.td("sci", *base, i, "kl"),
             page.td("pct", *base, i, "accuracy")]
            for i in range(len(sens["layers"]))
        ))  # fmt: skip
    trail = q.get("keep_float", {}).get("trail")
    if trail:
        base = ("quantization", "keep_float", "trail")
        page.add("<h3>--keep-float auto: layers kept in float vs PTQ quality</h3>")
        page.table(["kept", "KL", "accuracy"], (
            [page.td("int", *base, i, "kept"), page.td("sci", *base, i, "kl"),
             page.td("pct", *base, i, "accuracy")]
            for i in range(len(trail))
        ))  # fmt: skip


def _mixed_precision(page: Page) -> None:
    """The mixes timed to choose the float layers, or why only accuracy chose them."""
    speed = (page.report["quantization"] or {}).get("keep_float", {}).get("speed")
    if not speed:
        return
    base = ("quantization", "keep_float", "speed")
    page.add("<h3>Mixed precision: float layers chosen by speed on the runtime</h3>")
    if not speed["measured"]:
        page.add(f'<p class="note">Accuracy only: {page.v("text", *base, "why")}.</p>')
        return
    rows = [[_label("fp32"), page.td("ms", *base, "fp32_p90_ms"), _text("—"), _text("—")]]
    rows += [
        [page.v("text", *base, "mixes", i, "name", tag="th"),
         page.td("ms", *base, "mixes", i, "p90_ms"), page.td("g", *base, "mixes", i, "vs_fp32"),
         _text(str(len(m["keep_float"])))]
        for i, m in enumerate(speed["mixes"])
    ]  # fmt: skip
    page.table(["model", "p90 ms", "vs fp32", "layers in float"], rows)
    page.add(
        f'<p class="note">Shipped: {page.v("text", *base, "chosen")}. Timed whole in '
        f"interleaved rounds, {page.v('text', *base, 'where')}.</p>"
    )
    if "why_not_faster" in speed:
        page.add(f"<p>INT8 does not pay here: {page.v('text', *base, 'why_not_faster')}.</p>")


def _coverage(page: Page, base: tuple[str, ...], title: str) -> None:
    """A model's INT8 coverage after the runtime's optimizations, and its layers."""
    cov = resolve(page.report, pointer(*base))
    page.add(
        f"<h2>{escape(title)}</h2>",
        f"<p>{page.v('pct', *base, 'int8_fraction')} of {page.v('int', *base, 'macs')} "
        f"multiply-accumulates run in integer kernels ({page.v('int', *base, 'int8_layers')} of "
        f"{page.v('int', *base, 'layers')} layers) on {page.v('text', *base, 'runtime')}: "
        f"{page.v('text', *base, 'how')}.</p>",
    )
    rows = [
        [page.td("text", *base, "per_layer", i, "module" if r["module"] else "layer"),
         page.td("text", *base, "per_layer", i, "op"),
         page.td("text", *base, "per_layer", i, "kernel"),
         page.td("int", *base, "per_layer", i, "macs"),
         _text("yes" if r["int8"] else "no")]
        for i, r in enumerate(cov["per_layer"])
    ]  # fmt: skip
    page.table(["layer", "exported as", "runs as", "MACs", "INT8"], rows)


def _coverages(page: Page) -> None:
    r = page.report
    if _has(r, "export", "int8_coverage"):
        _coverage(page, ("export", "int8_coverage"), "What runs in INT8: student_int8")
    for name, engine in (r.get("engines") or {}).items():
        if "mac_coverage" in engine:
            _coverage(page, ("engines", name, "mac_coverage"), f"What runs in INT8: {name} engine")


def _drift(page: Page) -> None:
    drift = page.report.get("drift")
    if not drift:
        return
    index = {layer["module"]: i for i, layer in enumerate(drift["layers"])}
    page.add("<h2>Drift: fake-quant PyTorch vs the deployed runtime</h2>")
    rows = []
    for name in drift["top"]:
        i = index[name]
        base = ("drift", "layers", i)
        rows.append([page.td("text", *base, "module"), page.td("text", *base, "op"),
                     page.td("signed", *base, "added_rel_l2"), page.td("sci", *base, "rel_l2"),
                     page.td("sci", *base, "max_abs_diff"), page.td("cos", *base, "cosine")])  # fmt: skip
    page.table(["layer", "op", "added rel. error", "rel. error", "max abs diff", "cosine"], rows)
    page.add(
        f'<p class="note">On {page.v("int", "drift", "samples")} validation samples '
        f"({page.v('text', 'drift', 'runtime')}): logits max abs diff "
        f"{page.v('sci', 'drift', 'logits', 'max_abs_diff')}, top-1 agreement "
        f"{page.v('pct', 'drift', 'logits', 'top1_agreement')}; TensorRT "
        f"{page.v('text', 'drift', 'tensorrt')}.</p>"
    )


def _engines(page: Page) -> None:
    engines = page.report.get("engines")
    if not engines:
        return
    page.add("<h2>TensorRT engines built on the device</h2>")
    rows = [
        [
            _text(name),
            page.td("text", "engines", name, "tensorrt"),
            page.td("s", "engines", name, "build_seconds"),
            page.td("int", "engines", name, "int8_coverage", "compute_layers"),
            page.td("int", "engines", name, "int8_coverage", "int8_layers"),
            page.td("pct", "engines", name, "int8_coverage", "coverage"),
        ]
        for name in engines
    ]
    header = ["model", "TensorRT", "build s", "compute layers", "INT8 layers", "INT8 coverage"]
    page.table(header, rows)


def _provenance(page: Page) -> None:
    r = page.report
    page.add("<h2>How this was measured</h2>")
    rows = [[_label(f"latency {m}"), page.td("text", "latency_ms", m, "where")] for m in _models(r)]
    rows += [
        [_label("estimated latency (before training)"), page.td("ms", "estimate", "latency_ms")],
        [_label("estimate method"), page.td("text", "estimate", "method")],
        [_label("data"), page.td("text", "data", "source")],
        [_label("classes"), page.td("int", "data", "classes")],
        [_label("train samples"), page.td("int", "data", "train_samples")],
        [_label("validation samples"), page.td("int", "data", "val_samples")],
        [_label("teacher"), page.td("text", "teacher", "spec")],
    ]
    rows += [
        [_label(k), page.td("text", "environment", k)]
        for k, value in r["environment"].items()
        if isinstance(value, str | int | float)
    ]
    rows.append([_label("edgekd"), page.td("text", "edgekd")])
    page.table(None, rows)


def render_html(report: dict[str, Any]) -> str:
    """The whole page for ``report`` (a report.json object), self-contained."""
    page = Page(report)
    _verdict(page)
    _summary(page)
    page.add("<h2>Accuracy and latency</h2>")
    _accuracy_latency(page)
    _latency_cdf(page)
    page.add("<h2>Per class</h2>")
    _per_class(page)
    page.add("<h2>Size</h2>")
    _sizes(page)
    page.add("<h2>Training</h2>")
    _training(page)
    _distillation_gain(page)
    _sizing(page)
    _quantization(page)
    _mixed_precision(page)
    _coverages(page)
    _drift(page)
    _engines(page)
    _provenance(page)
    title = f"edgekd: {report['student']['label']} for {report['target']['name']}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(page.parts)
        + "\n</body></html>\n"
    )
