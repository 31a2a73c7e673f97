"""report.html: one self-contained page for people — the verdict first, then plots and tables.

Styles are inline and every plot is a PNG data URI, so the file opens offline and can be mailed
or uploaded as a CI artifact. Every figure shown comes from report.json: each table cell, list
item or span holding one carries ``data-json``, the JSON pointer of the value it shows, and each
plot lists the pointers it draws in ``data-sources``.
"""

from __future__ import annotations

from html import escape
from typing import Any

from edgekd.report import plots
from edgekd.report.drift import COLUMNS, HEADER, top_layers
from edgekd.report.markdown import HEADROOM, headroom_note
from edgekd.report.page import Page, has, pointer, resolve, row_label, shown_models, text_cell

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
        [row_label(g["name"]), text_cell(*GATE_STATUS[g["status"]]),
         page.td("text", "gates", "records", i, "evidence"),
         text_cell(MEASURED_ON[g["measured_on_target"]])]
        for i, g in enumerate(gates["records"])
    ]  # fmt: skip
    page.table(["gate", "result", "evidence", "measured on"], rows)
    page.add("</section>")


def _summary(page: Page) -> None:
    r = page.report
    rows = []
    for m in shown_models(r):
        student = "teacher" if m == "teacher" else "student"
        rows.append(
            [
                row_label(m),
                page.td("pct", "accuracy", m),
                text_cell("—") if m == "teacher" else page.td("pct", "agreement", m),
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
        [row_label("gain, pt"), page.td("pt", *base, "gain_pt")],
        [row_label("95 % interval, pt"), page.td("pt", *base, "ci_pt", 0),
         page.td("pt", *base, "ci_pt", 1)],
        [row_label("distilled accuracy"), page.td("pct", *base, "distilled_accuracy")],
        [row_label("baseline accuracy"), page.td("pct", *base, "baseline_accuracy")],
        [row_label("right only when distilled"), page.td("int", *base, "only_distilled_correct")],
        [row_label("right only in the baseline"), page.td("int", *base, "only_baseline_correct")],
        [row_label("validation samples"), page.td("int", *base, "samples")],
        [row_label("resamples"), page.td("int", *base, "resamples")],
        [row_label("same initial weights"), text_cell(same[gain["same_init"]])],
        [row_label("same batches"), text_cell(same[gain["same_batches"]])],
        [row_label("method"), page.td("text", *base, "method")],
    ]  # fmt: skip
    page.table(None, rows)
    if headroom_note(page.report):
        page.add(
            '<p class="note">The student trained alone is as accurate as the teacher (the '
            f"baseline row above, the teacher's in the summary): {escape(HEADROOM)}</p>"
        )


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
        [row_label(label), page.td(kind, "student", "sizing", "estimate", key)]
        for key, label, kind in ESTIMATE_ROWS
        if key in sizing["estimate"]
    ]
    rows += [
        [row_label(label), page.td("int", "student", "sizing", key)]
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
    rows = [[row_label("mode"), text_cell("post-training (calibration only)" if q.get("ptq")
                                  else "quantization-aware")]]  # fmt: skip
    if cal:
        rows += [
            [row_label("calibration"), page.td("text", "quantization", "calibration", "method")],
            [
                row_label("calibration samples"),
                page.td("int", "quantization", "calibration", "samples"),
            ],
            [
                row_label("calibration seconds"),
                page.td("s", "quantization", "calibration", "seconds"),
            ],
        ]
    if "weight_bits" in q:
        rows += [
            [row_label("weight bits"), page.td("int", "quantization", "weight_bits", "bits")],
            [row_label("weight bits, why"), page.td("text", "quantization", "weight_bits", "why")],
        ]
    for i, _ in enumerate(q.get("keep_float", {}).get("layers", [])):
        rows.append(
            [row_label("kept in float"), page.td("text", "quantization", "keep_float", "layers", i)]
        )
    for i, _ in enumerate(q.get("unquantizable", [])):
        rows.append(
            [row_label("not quantizable"), page.td("text", "quantization", "unquantizable", i)]
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
    rows = [
        [row_label("fp32"), page.td("ms", *base, "fp32_p90_ms"), text_cell("—"), text_cell("—")]
    ]
    rows += [
        [page.v("text", *base, "mixes", i, "name", tag="th"),
         page.td("ms", *base, "mixes", i, "p90_ms"), page.td("g", *base, "mixes", i, "vs_fp32"),
         text_cell(str(len(m["keep_float"])))]
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
         text_cell("yes" if r["int8"] else "no")]
        for i, r in enumerate(cov["per_layer"])
    ]  # fmt: skip
    page.table(["layer", "exported as", "runs as", "MACs", "INT8"], rows)


def _coverages(page: Page) -> None:
    r = page.report
    if has(r, "export", "int8_coverage"):
        _coverage(page, ("export", "int8_coverage"), "What runs in INT8: student_int8")
    for name, engine in (r.get("engines") or {}).items():
        if "mac_coverage" in engine:
            _coverage(page, ("engines", name, "mac_coverage"), f"What runs in INT8: {name} engine")


def _drift(page: Page) -> None:
    drift = page.report.get("drift")
    if not drift:
        return
    page.add("<h2>Drift: fake-quant PyTorch vs the deployed runtime</h2>")
    rows = [
        [page.td(kind, "drift", "layers", i, key) for _, key, kind in COLUMNS]
        for i, _ in top_layers(drift)
    ]
    page.table(HEADER, rows)
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
            text_cell(name),
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
    rows = [
        [row_label(f"latency {m}"), page.td("text", "latency_ms", m, "where")]
        for m in shown_models(r)
    ]
    rows += [
        [row_label("estimated latency (before training)"), page.td("ms", "estimate", "latency_ms")],
        [row_label("estimate method"), page.td("text", "estimate", "method")],
        [row_label("data"), page.td("text", "data", "source")],
        [row_label("classes"), page.td("int", "data", "classes")],
        [row_label("train samples"), page.td("int", "data", "train_samples")],
        [row_label("validation samples"), page.td("int", "data", "val_samples")],
        [row_label("teacher"), page.td("text", "teacher", "spec")],
    ]
    rows += [
        [row_label(k), page.td("text", "environment", k)]
        for k, value in r["environment"].items()
        if isinstance(value, str | int | float)
    ]
    rows.append([row_label("edgekd"), page.td("text", "edgekd")])
    page.table(None, rows)


def render_html(report: dict[str, Any]) -> str:
    """The whole page for ``report`` (a report.json object), self-contained."""
    page = Page(report)
    _verdict(page)
    _summary(page)
    page.add("<h2>Accuracy and latency</h2>")
    plots.accuracy_latency(page)
    plots.latency_cdf(page)
    page.add("<h2>Per class</h2>")
    plots.per_class(page)
    page.add("<h2>Size</h2>")
    plots.sizes(page)
    page.add("<h2>Training</h2>")
    plots.training(page)
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
