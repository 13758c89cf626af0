"""Show a benchmark report: the terminal table, the JSON file and the PNG plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

from photonlib.benchmarks.spec import BASELINE, METHODS


def _number(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def _ratio(entry: dict | None) -> str:
    if not entry or entry["achieved"] is None:
        return "-"
    limit = entry["limit"]
    return f"{entry['achieved']:.2f}x" + (f" ({limit:.2f}x)" if limit is not None else "")


def _rows(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(width) if i else cell.ljust(width) for i, (cell, width) in enumerate(zip(cells, widths))
        )

    return [line(header), line(["-" * width for width in widths]), *(line(row) for row in rows)]


def format_table(report: dict) -> str:
    """The figures per method, the ratios to the baseline with their limits, and the ITS profile."""
    methods = [m for m in METHODS if m in report["methods"]]
    spec = report["spec"]
    out = [
        f"photon bench --preset {report['preset']}: volume {'x'.join(map(str, spec['volume_shape']))}, "
        f"{spec['device']} {spec['dtype']}, {spec['new_tokens']} new tokens, median of {spec['repeats']} "
        f"after {spec['warmup']} warm-up",
        "",
    ]
    header = ["method", "patches", "vis->LLM", "kept", "vision s", "TTFT s", "decode tok/s", "e2e tok/s",
              "train smp/s", "peak MiB", "mem+ MiB", "train mem+ MiB"]  # fmt: skip
    rows = []
    for method in methods:
        result = report["methods"][method]
        tokens, figures, memory = result["tokens"], result.get("figures", {}), result.get("memory", {})
        rows.append([
            result["label"], str(tokens["vision_patches"]), str(tokens["visual_entering_llm"]),
            str(tokens["visual_after_pruning"]), _number(figures.get("vision_s")), _number(figures.get("ttft_s")),
            _number(figures.get("decode_tokens_per_s")), _number(figures.get("end_to_end_tokens_per_s")),
            _number(figures.get("train_samples_per_s")), _number(memory.get("inference_peak_mib")),
            _number(memory.get("inference_increase_mib")),
            _number(memory.get("train_increase_mib")),
        ])  # fmt: skip
    out += _rows(header, rows)
    out += _first_token_rows(report, methods)
    if report["ratios"]:
        out += [
            "",
            f"ratio to {report['methods'][BASELINE]['label']}: achieved (limit from token counts; decode: from the "
            "bytes read per step)",
        ]
        header = ["method", "TTFT", "LLM prefill", "decode tok/s", "e2e tok/s", "train smp/s", "mem+", "peak"]
        rows = []
        for method in methods:
            entries = report["ratios"][method]
            rows.append([report["methods"][method]["label"]] + [
                _ratio(entries.get(name)) for name in
                ("ttft_s", "llm_prefill_s", "decode_tokens_per_s", "end_to_end_tokens_per_s", "train_samples_per_s",
                 "inference_increase_mib", "inference_peak_mib")
            ])  # fmt: skip
        out += _rows(header, rows)
    profile = report.get("profile")
    if profile and profile["stages_s"]:
        stages = profile["stages_s"]
        prefill = profile["prefill_s"] or 1.0
        out += ["", "Photon + ITS, where one answer's time goes (profiled run, seconds, share of prefill):"]
        for name, value in stages.items():
            share = "" if name == "decode" else f"  {100 * value / prefill:5.1f}%"
            out.append(f"  {name:<24}{value:9.4f}{share}")
        its = profile["its_overhead_s"]
        out.append(
            f"  ITS overhead (scoring + select): {its:.4f} s = {100 * (profile['its_overhead_share_of_prefill'] or 0):.1f}% of prefill"
        )
        for op in (profile.get("torch_top_ops") or [])[:6]:
            out.append(f"  top op {op['op']:<48}{op['self_ms']:9.2f} ms {100 * op['share']:5.1f}%  x{op['calls']}")
    for method, overhead in report.get("pruning_overhead", {}).items():
        if method != "photon-its":
            out.append(
                f"  {report['methods'][method]['label']} pruning overhead (estimated as a difference of medians, "
                f"noise can make it negative): {overhead['seconds']:.4f} s"
            )
    errors = {m: r["errors"] for m, r in report["methods"].items() if r.get("errors")}
    for method, problems in errors.items():
        for phase, message in problems.items():
            out.append(f"  {method} {phase}: {message}")
    if report.get("elapsed_s") is not None:
        out += ["", f"took {report['elapsed_s']:.0f} s"]
    return "\n".join(out)


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _first_token_rows(report: dict, methods: list[str]) -> list[str]:
    """Per method: the follow-up question's TTFT against the first's (when measured) and the per-op
    framework overhead of one prefill (op calls x the fixed cost of one) as a share of TTFT."""
    results = [report["methods"][method] for method in methods]
    follow_up = any(result.get("figures", {}).get("follow_up_ttft_s") is not None for result in results)
    overhead = any(result.get("framework_overhead") for result in results)
    if not follow_up and not overhead:
        return []
    header = ["method", "TTFT s"]
    if follow_up:
        header += ["follow-up TTFT s", "follow-up / first"]
    if overhead:
        header += ["prefill ops", "per-op us", "overhead s", "overhead / TTFT"]
    rows = []
    for result in results:
        figures = result.get("figures", {})
        row = [result["label"], _number(figures.get("ttft_s"))]
        if follow_up:
            ratio, limit = figures.get("follow_up_ratio"), figures.get("follow_up_limit")
            shown = "-" if ratio is None else f"{ratio:.2f}" + (f" ({limit:.2f})" if limit is not None else "")
            row += [_number(figures.get("follow_up_ttft_s")), shown]
        if overhead:
            framework = result.get("framework_overhead") or {}
            per_op = framework.get("per_op_s")
            row += [
                _number(framework.get("ops_per_prefill")), _number(None if per_op is None else per_op * 1e6),
                _number(framework.get("seconds")), _percent(framework.get("share_of_ttft")),
            ]  # fmt: skip
        rows.append(row)
    title = "time to first token"
    if follow_up:
        title += "; follow-up: a second question about the same volume, vision output and prompt prefix reused (limit from token counts)"
    if overhead:
        title += "; overhead: top-level ops of one prefill x one op dispatch"
    return ["", title, *_rows(header, rows)]


def write_json(report: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, allow_nan=False, default=_finite))
    return path


def _finite(value):  # pragma: no cover - everything in the report is already plain
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def write_plot(report: dict, path: str | Path) -> Path:
    """Time and memory against visual tokens kept (log axes); hollow markers: the cost-model limit."""
    try:
        import matplotlib
    except ImportError as error:
        raise ValueError("--plot needs matplotlib: pip install 'photonlib[bench]'") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in METHODS if m in report["methods"]]
    kept = {m: report["methods"][m]["tokens"]["visual_after_pruning"] for m in methods}
    panels = [
        ("time to first token (s)", "ttft_s"),
        ("training step (s)", "train_step_s"),
        ("peak memory above the model (MiB)", "inference_increase_mib"),
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, (title, name) in zip(axes, panels):
        for index, method in enumerate(methods):
            result = report["methods"][method]
            value = result.get("figures", {}).get(name, result.get("memory", {}).get(name))
            if value is None:
                continue
            colour = colours[index % len(colours)]
            axis.scatter([kept[method]], [value], color=colour, label=result["label"], zorder=3)
            limit = _limit_value(report, method, name)
            if limit is not None and method != BASELINE:
                axis.scatter([kept[method]], [limit], facecolors="none", edgecolors=colour, zorder=2)
                axis.plot([kept[method]] * 2, [limit, value], color=colour, linewidth=0.8, alpha=0.6)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("visual tokens kept")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    spec = report["spec"]
    figure.suptitle(
        f"photon bench --preset {report['preset']} ({spec['device']}, {spec['dtype']}); hollow: limit from token counts",
        fontsize=10,
    )
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _limit_value(report: dict, method: str, name: str) -> float | None:
    """The value the baseline's figure times the limit ratio gives (training: step time)."""
    ratios = report.get("ratios", {}).get(method)
    if not ratios:
        return None
    if name == "train_step_s":
        entry = ratios.get("train_samples_per_s")
        base = report["methods"][BASELINE]["figures"].get("train_step_s")
        return base / entry["limit"] if entry and entry["limit"] and base else None
    entry = ratios.get(name)
    return entry["baseline"] * entry["limit"] if entry and entry["limit"] is not None and entry["baseline"] else None
