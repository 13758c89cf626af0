"""Run every method (one fresh worker process each, or in-process) and assemble the report.

The report (a JSON-serialisable dict, schema ``photonlib.bench/1``) holds per method the token
counts, the medians and raw runs, peak memory, the per-stage profile, the per-op framework
overhead, the FLOPs and decode bytes of the cost model, the follow-up question's TTFT ratio when
measured, and per figure the ratio to the baseline next to the limit the token counts allow.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from photonlib.benchmarks import costmodel
from photonlib.benchmarks.spec import BASELINE, INTERLEAVED, BenchSpec
from photonlib.errors import PhotonEnvironmentError

SCHEMA = "photonlib.bench/1"

#: figure -> "time" (lower is better) or "rate" (higher is better); ratio = method / baseline.
RATIO_FIGURES = {
    "vision_s": "time",
    "llm_prefill_s": "time",
    "ttft_s": "time",
    "decode_tokens_per_s": "rate",
    "end_to_end_tokens_per_s": "rate",
    "train_samples_per_s": "rate",
    "inference_increase_mib": "time",
    "inference_peak_mib": "time",
    "train_increase_mib": "time",
}


class BenchError(PhotonEnvironmentError):
    """A benchmark that cannot run on this machine (shown as one line by the CLI)."""


def check_device(spec: BenchSpec) -> None:
    """Refuse early, in one sentence, a CUDA preset on a machine without CUDA."""
    if spec.device != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        raise BenchError(
            f"preset {spec.preset} needs a CUDA GPU and torch.cuda.is_available() is False here "
            f"(torch {torch.__version__}); use --preset cpu-compute or cpu on this machine"
        )


def run_worker(spec: BenchSpec, method: str) -> dict:
    """One method (or ``INTERLEAVED``) in a fresh Python process (``python -m photonlib.benchmarks.worker``)."""
    with tempfile.TemporaryDirectory(prefix="photon-bench-") as folder:
        spec_file, result_file = Path(folder) / "spec.json", Path(folder) / "result.json"
        spec_file.write_text(json.dumps(spec.to_dict()))
        completed = subprocess.run(
            [sys.executable, "-m", "photonlib.benchmarks.worker", str(spec_file), method, str(result_file)],
            capture_output=True, text=True,
        )  # fmt: skip
        if completed.returncode != 0 or not result_file.exists():
            tail = (completed.stderr or completed.stdout).strip().splitlines()[-12:]
            raise RuntimeError(
                f"benchmark worker for {method} failed (exit {completed.returncode}):\n" + "\n".join(tail)
            )
        return json.loads(result_file.read_text())


def run_bench(spec: BenchSpec, progress: Callable[[str], None] | None = None, command: str | None = None) -> dict:
    """Measure every method of ``spec`` and return the report."""
    check_device(spec)
    say = progress or (lambda _message: None)
    started = time.perf_counter()
    results: dict[str, dict] = {}
    methods = spec.ordered_methods
    for method in methods:
        say(f"measuring {method} ..." if not spec.interleave else f"measuring {method}'s tokens, memory and profile ...")
        method_started = time.perf_counter()
        if spec.isolate:
            results[method] = run_worker(spec, method)
        else:
            from photonlib.benchmarks.measure import run_method

            results[method] = run_method(spec, method, timings=not spec.interleave)
        results[method]["wall_s"] = time.perf_counter() - method_started
        say(f"measured {method} in {results[method]['wall_s']:.1f} s")
    if spec.interleave:
        say(f"timing {', '.join(methods)}, interleaved round by round ...")
        timing_started = time.perf_counter()
        if spec.isolate:
            timed = run_worker(spec, INTERLEAVED)
        else:
            from photonlib.benchmarks.measure import run_interleaved

            timed = run_interleaved(spec, methods)
        merge_timings(results, timed)
        say(f"timed in {time.perf_counter() - timing_started:.1f} s")
    from photonlib.benchmarks.measure import machine_info

    report = assemble(spec, results)
    report["command"] = command
    report["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    report["machine"] = machine_info(spec.device, spec.threads)
    report["elapsed_s"] = time.perf_counter() - started
    return report


def merge_timings(results: dict[str, dict], timed: dict[str, dict]) -> None:
    """Put the interleaved rounds' runs and figures into each method's result."""
    for method, outcome in timed.items():
        result = results[method]
        result["runs"], result["figures"] = outcome["runs"], outcome["figures"]
        result["errors"].update(outcome["errors"])
        result["timed"] = "interleaved with the other methods, in one process"
        overhead = result.get("framework_overhead")
        if overhead is not None:
            ttft = outcome["figures"].get("ttft_s")
            overhead["share_of_ttft"] = overhead["seconds"] / ttft if ttft else None


def figure_value(result: dict, figure: str) -> float | None:
    if figure in result.get("figures", {}):
        return result["figures"][figure]
    return result.get("memory", {}).get(figure)


def assemble(spec: BenchSpec, results: dict[str, dict]) -> dict:
    """Add the cost model, the ratios to the baseline and their limits, and the ITS profile."""
    from photonlib.benchmarks.build import build_tokenizer, model_config

    tokenizer = build_tokenizer(spec)
    costs = {}
    for method, result in results.items():
        config = model_config(spec, method, tokenizer)
        grid = config.patch_grid(spec.volume_shape)
        costs[method] = costmodel.method_cost(
            config, result["tokens"], grid, channels=3 if method == BASELINE else 1, its=method == "photon-its",
            value_bytes=costmodel.DTYPE_BYTES[spec.dtype],
        )  # fmt: skip
        result["cost"] = costs[method]
        follow_up_ratio(result)
        if method not in ("visionzip", "hiprune"):  # vision-stage pruners share no prefix: limit 1
            shape = follow_up_shape(spec, config, tokenizer, grid)
            follow_up = costmodel.follow_up_flops(config, result["tokens"], shape, its=method == "photon-its")
            costs[method]["follow_up_flops"] = follow_up
            result["figures"]["follow_up_limit"] = follow_up / costs[method]["ttft_flops"]

    ratios: dict[str, dict] = {}
    if BASELINE in results:
        base = results[BASELINE]
        for method, result in results.items():
            limits = costmodel.limit_ratios(costs[method], costs[BASELINE])
            base_figures = base.get("figures", {})
            limits["end_to_end_tokens_per_s"] = costmodel.end_to_end_limit(
                limits["ttft_s"],
                limits["decode_tokens_per_s"],
                base_figures.get("ttft_s"),
                base_figures.get("decode_s"),
            )
            # Whole peak: what was resident before (weights, inputs; on a CPU also the runtime) stays,
            # only the baseline's increase scales with the tokens.
            memory = base.get("memory", {})
            if memory.get("inference_peak_mib") and memory.get("inference_increase_mib") is not None:
                resident = memory["inference_peak_mib"] - memory["inference_increase_mib"]
                scaled = resident + memory["inference_increase_mib"] * limits["inference_increase_mib"]
                limits["inference_peak_mib"] = scaled / memory["inference_peak_mib"]
            entries = {}
            for figure, kind in RATIO_FIGURES.items():
                value, reference = figure_value(result, figure), figure_value(base, figure)
                achieved = value / reference if value is not None and reference else None
                limit = limits.get(figure)
                entries[figure] = {
                    "kind": kind,
                    "method": value,
                    "baseline": reference,
                    "achieved": achieved,
                    "limit": limit,
                    "fraction_of_limit": costmodel.fraction_of_limit(achieved, limit, kind),
                    "limit_from": costmodel.LIMIT_BASIS.get(figure),
                }
            # The FLOP-only limits of the two figures whose limit is not a FLOP ratio.
            entries["decode_tokens_per_s"]["flop_limit"] = limits["decode_flop_limit"]
            entries["end_to_end_tokens_per_s"]["flop_limit"] = limits["end_to_end_flop_limit"]
            ratios[method] = entries

    report = {
        "schema": SCHEMA,
        "preset": spec.preset,
        "spec": spec.to_dict(),
        "baseline": BASELINE,
        "methods": results,
        "ratios": ratios,
        "pruning_overhead": pruning_overhead(results),
    }
    if "photon-its" in results:
        its = results["photon-its"]
        stages = its.get("stages_s", {})
        prefill = sum(value for name, value in stages.items() if name != "decode")
        overhead = stages.get("its_scoring", 0.0) + stages.get("its_select", 0.0)
        report["profile"] = {
            "method": "photon-its",
            "stages_s": stages,
            "prefill_s": prefill,
            "its_overhead_s": overhead,
            "its_overhead_share_of_prefill": overhead / prefill if prefill else None,
            "torch_top_ops": its.get("torch_profile"),
        }
    return report


def follow_up_shape(spec: BenchSpec, config, tokenizer, grid) -> dict:
    """Token counts of the follow-up prompt that decide its prefill: new tokens after the shared
    prefix, the prefix, the text before the volume and all its text tokens."""
    from photonlib.model import PhotonProcessor
    from photonlib.model.prompt_prefix import prefix_length
    from photonlib.volume import PreprocessConfig

    processor = PhotonProcessor.for_config(config, PreprocessConfig(model_grid=spec.volume_shape), tokenizer)
    ids = processor.prompt_inputs(grid, spec.follow_up_question)["input_ids"]
    prefix = prefix_length(ids, config.vision_end_token_id)
    visual = ids[0] == config.video_token_id
    return {
        "new": int(ids.shape[1]) - prefix,
        "prefix": prefix,
        "leading": int(visual.int().argmax()),
        "text": int((~visual).sum()),
    }


def follow_up_ratio(result: dict) -> None:
    """``figures.follow_up_ratio``: a second question's TTFT over the first's, where both were measured.

    The follow-up is a different question about the same volume that reuses the vision tower's
    output and the question-independent prompt prefix (see ``measure.py``).
    """
    figures = result.get("figures", {})
    follow_up, first = figures.get("follow_up_ttft_s"), figures.get("ttft_s")
    if follow_up is not None and first:
        figures["follow_up_ratio"] = follow_up / first


def pruning_overhead(results: dict[str, dict]) -> dict[str, dict]:
    """Seconds each pruner adds to the prefill.

    ITS: measured directly (layer k's query/key recomputation, then scoring, threshold and the
    gather), from the profiled run. Fixed-budget pruners: their vision tower time above Photon's
    (attention recording inside the tower, medians) plus their selection and gather before the
    language model above Photon's (profiled run): an estimate from differences.
    """
    overhead = {}
    if "photon-its" in results and "stages_s" in results["photon-its"]:
        stages = results["photon-its"]["stages_s"]
        overhead["photon-its"] = {
            "seconds": stages["its_scoring"] + stages["its_select"],
            "how": "measured: its_scoring + its_select stages of the profiled prefill",
        }
    reference = results.get("photon")
    for method in ("visionzip", "hiprune"):
        result = results.get(method)
        if result is None or reference is None or "stages_s" not in result or "stages_s" not in reference:
            continue
        vision = (result["figures"]["vision_s"] or 0.0) - (reference["figures"]["vision_s"] or 0.0)
        selection = result["stages_s"]["inputs"] - reference["stages_s"]["inputs"]
        overhead[method] = {
            "seconds": vision + selection,
            "vision_recording_s": vision,
            "selection_s": selection,
            "how": "estimated: vision time and pre-LLM stage above Photon without pruning",
        }
    return overhead
