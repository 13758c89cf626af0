"""Measure one method (runs inside a worker process, or in-process for tests).

Order inside one process: build the model and inputs; one untimed prefill that also counts the
tokens; peak memory of one answer (prefill + decode) and of one training step, each from a
fresh high-water mark; ``warmup`` + ``repeats`` answers (vision time, time to first token, decode
time); ``warmup`` + ``repeats`` follow-up questions (a second question about the same volume:
its time to first token with the vision output and the prompt prefix reused); ``warmup`` +
``repeats`` training steps (forward with labels + backward); one profiled
answer with a timestamp at every stage boundary; for Photon + ITS, torch.profiler's top ops;
last, the per-op framework overhead: one profiled prefill's op calls and the cost of one dispatch.

Peak memory:

* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``; the increase is
  over what was allocated before (the weights and inputs).
* CPU: the process's resident set. Before each measurement freed heap memory is handed back to
  the OS (``malloc_trim``) and the kernel's high-water mark is reset to the current RSS
  (``/proc/self/clear_refs`` = 5); the peak is ``VmHWM`` afterwards. Each method runs in its
  own fresh process (``BenchSpec.isolate``), so no method inherits another's heap. Where
  ``clear_refs`` cannot be written, the peak is ``ru_maxrss``, which never goes down (flagged).
"""

from __future__ import annotations

import ctypes
import gc
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from photonlib.benchmarks.build import MethodSetup, setup_method
from photonlib.benchmarks.spec import METHOD_LABELS, BenchSpec

MIB = 1024 * 1024
PROFILE_TOP_OPS = 12


def _out_of_memory_errors() -> tuple[type[BaseException], ...]:
    errors = [getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)]
    return tuple(error for error in errors if error is not None) or (MemoryError,)


OUT_OF_MEMORY = (*_out_of_memory_errors(), MemoryError)


def median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


# ----------------------------------------------------------------------------- memory
def _proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class MemoryProbe:
    """Peak memory of one phase: ``begin()``, run, ``end()`` -> (increase MiB, peak total MiB)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.method = "cuda max_memory_allocated" if device == "cuda" else "VmHWM after clear_refs"
        self.exact = True
        self.before = 0.0
        self._libc = None
        if device != "cuda":
            try:
                self._libc = ctypes.CDLL("libc.so.6")
            except OSError:
                self._libc = None

    def begin(self) -> None:
        gc.collect()
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.before = torch.cuda.memory_allocated() / MIB
            return
        if self._libc is not None:
            self._libc.malloc_trim(0)
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.exact, self.method = False, "ru_maxrss (monotone: an increase may be underestimated)"
        rss = _proc_status_kib("VmRSS")
        self.before = (rss if rss is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024

    def end(self) -> tuple[float, float]:
        if self.device == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() / MIB
        else:
            hwm = _proc_status_kib("VmHWM") if self.exact else None
            peak = (hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024
        return max(0.0, peak - self.before), peak


# ----------------------------------------------------------------------------- stage clock
class StageClock:
    """Timestamps at module boundaries (forward hooks), synchronised with the device.

    Always: the vision tower's start and end. ``detailed``: also the language model, every
    decoder layer and the lm_head, for the prefill only (it stops after the first lm_head call),
    so decoding runs without the extra synchronisations.
    """

    def __init__(self, model, synchronize: Callable[[], None], detailed: bool = False) -> None:
        self.synchronize = synchronize
        self.events: list[tuple[str, float]] = []
        self.armed = False
        self.handles = []
        modules = [("vision", model.model.visual)]
        if detailed:
            modules.append(("llm", model.model.language_model))
            modules += [(f"layer{i}", layer) for i, layer in enumerate(model.model.language_model.layers)]
            modules.append(("head", model.lm_head))
        for name, module in modules:
            self.handles.append(module.register_forward_pre_hook(self._hook(f"{name}_start")))
            self.handles.append(module.register_forward_hook(self._hook(f"{name}_end", last=detailed and name == "head")))

    def _hook(self, event: str, last: bool = False):
        def record(*_):
            if not self.armed:
                return
            self.synchronize()
            self.events.append((event, time.perf_counter()))
            if last:
                self.armed = False

        return record

    def start(self) -> None:
        self.events, self.armed = [], True

    def times(self) -> dict[str, float]:
        """First occurrence of every event."""
        first: dict[str, float] = {}
        for name, moment in self.events:
            first.setdefault(name, moment)
        return first

    def vision_seconds(self) -> float:
        times = self.times()
        return times["vision_end"] - times["vision_start"] if "vision_end" in times else 0.0

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def prefill_stages(times: dict[str, float], layers: int, its_layer: int) -> dict[str, float]:
    """Seconds per stage of one prefill from a detailed clock's first events.

    ``its_scoring``: from the end of layer k-1 to the start of layer k (ITS recomputes layer k's
    queries and keys there); ``its_select``: from the end of layer k to the start of layer k+1
    (scores, threshold, the gather of hidden states, KV cache, positions and mask). Without ITS
    both are the bare loop (near 0). ``inputs``: from the vision tower's end to the language
    model's start (embedding, positions; a fixed-budget pruner's selection and gather).
    """
    k = its_layer
    start_k = f"layer{k}_start"
    before_k = times["llm_start"] if k == 0 else times[f"layer{k - 1}_end"]
    stages = {
        "vision": times.get("vision_end", 0.0) - times.get("vision_start", 0.0),
        "inputs": times["llm_start"] - times.get("vision_end", times["llm_start"]),
        "llm_setup": times["layer0_start"] - times["llm_start"] if k > 0 else 0.0,
        "llm_layers_before_its": (times[f"layer{k - 1}_end"] - times["layer0_start"]) if k > 0 else 0.0,
        "its_scoring": times[start_k] - before_k,
        "llm_its_layer": times[f"layer{k}_end"] - times[start_k],
        "its_select": times[f"layer{k + 1}_start"] - times[f"layer{k}_end"],
        "llm_layers_after_its": times[f"layer{layers - 1}_end"] - times[f"layer{k + 1}_start"],
        "norm_lm_head": times["head_end"] - times[f"layer{layers - 1}_end"],
    }
    return {name: max(0.0, value) for name, value in stages.items()}


# ----------------------------------------------------------------------------- steps
def train_step(model, batch: dict[str, torch.Tensor], pruning: dict) -> float:
    """The project's training forward (labels -> cross-entropy) and backward; returns the loss."""
    output = model(**batch, **pruning)
    output.loss.backward()
    loss = float(output.loss.detach())
    model.zero_grad(set_to_none=True)
    return loss


def _generate(model, batch: dict[str, torch.Tensor], new_tokens: int, pruning: dict):
    # eos_token_id=-1 never matches: exactly new_tokens tokens are decoded.
    return model.generate(**batch, max_new_tokens=new_tokens, eos_token_id=-1, **pruning)


def torch_profile_top(model, batch: dict[str, torch.Tensor], pruning: dict, device: str, synchronize) -> list[dict]:
    """torch.profiler's top ops (by self time on the device, or on the CPU) of one prefill."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with torch.no_grad(), profile(activities=activities) as profiler:
        model(**batch, use_cache=True, logits_to_keep=1, **pruning)
        synchronize()
    events = profiler.key_averages()

    def self_us(event) -> float:
        if device == "cuda":
            return float(getattr(event, "self_device_time_total", getattr(event, "self_cuda_time_total", 0.0)))
        return float(event.self_cpu_time_total)

    total = sum(self_us(event) for event in events) or 1.0
    ranked = sorted(events, key=self_us, reverse=True)[:PROFILE_TOP_OPS]
    return [
        {"op": event.key, "self_ms": self_us(event) / 1000, "share": self_us(event) / total, "calls": int(event.count)}
        for event in ranked
    ]


# ----------------------------------------------------------------------------- follow-up question
def follow_up_ttft(model, setup: MethodSetup, synchronize) -> float:
    """Time to first token of a second, different question about the same volume, as the engine asks it.

    The vision tower's output is kept from the first question (except for vision-stage pruners,
    which must watch the tower run again), and the first question leaves its prompt prefix
    through the ITS layer in a :class:`~photonlib.model.prompt_prefix.PrefixCache` that the
    follow-up reuses. Only the follow-up is timed.
    """
    from photonlib.model.prompt_prefix import PrefixCache

    prefix_cache = PrefixCache()
    vision_stage = setup.pruner.stage == "vision"
    shared: dict = {"video_grid_thw": setup.inference["video_grid_thw"], "prefix_cache": prefix_cache}
    with torch.no_grad():
        if vision_stage:
            shared["pixel_values"] = setup.inference["pixel_values"]
        else:
            shared["visual_embeddings"] = model.model.encode_volumes(
                setup.inference["pixel_values"], setup.inference["video_grid_thw"]
            )
    texts = ("input_ids", "attention_mask")
    first = {key: setup.inference[key] for key in texts}
    second = {key: setup.follow_up[key] for key in texts}
    model.generate(**first, **shared, max_new_tokens=1, eos_token_id=-1, **setup.pruning)
    synchronize()
    generation = model.generate(**second, **shared, max_new_tokens=1, eos_token_id=-1, **setup.pruning)
    if not vision_stage and not generation.prefix_reused:
        raise RuntimeError("the follow-up question did not reuse the first question's prompt prefix")
    return generation.timings["vision"] + generation.timings["prefill"]


# ----------------------------------------------------------------------------- framework overhead
DISPATCH_PROBE_OPS = 1000  # torch.add calls per timed batch
DISPATCH_PROBE_BATCHES = 9  # the median batch is the figure


def count_prefill_ops(model, batch: dict[str, torch.Tensor], pruning: dict, synchronize) -> int:
    """Top-level aten op calls of one prefill (vision tower + language model up to the first logits).

    Counted with torch.profiler (CPU activity): an ``aten::`` event none of whose ancestors is an
    ``aten::`` event, i.e. one dispatch from Python; the ops an op calls inside (``linear`` ->
    ``addmm``) are not counted again.
    """
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as profiler:
        model(**batch, use_cache=True, logits_to_keep=1, **pruning)
        synchronize()

    def nested(event) -> bool:
        parent = event.cpu_parent
        while parent is not None:
            if parent.name.startswith("aten::"):
                return True
            parent = parent.cpu_parent
        return False

    return sum(1 for event in profiler.events() if event.name.startswith("aten::") and not nested(event))


def op_dispatch_seconds(device: str, synchronize) -> float:
    """The fixed cost of one op dispatch here: median time per ``torch.add`` of two 1-element tensors.

    Runs under ``no_grad`` with the process's thread setting, as the prefill does; each call
    allocates its 1-element output, as a model's ops do. On CUDA it is the launch rate.
    """
    left = torch.ones(1, device=device)
    right = torch.ones(1, device=device)
    per_op = []
    with torch.no_grad():
        for _ in range(DISPATCH_PROBE_BATCHES):
            synchronize()
            started = time.perf_counter()
            for _ in range(DISPATCH_PROBE_OPS):
                torch.add(left, right)
            synchronize()
            per_op.append((time.perf_counter() - started) / DISPATCH_PROBE_OPS)
    return float(statistics.median(per_op))


def framework_overhead(ops: int, per_op_s: float, ttft_s: float | None) -> dict:
    """Per-op framework overhead of one prefill: op calls x the fixed cost of one, and its share of TTFT."""
    seconds = ops * per_op_s
    return {
        "ops_per_prefill": ops,
        "per_op_s": per_op_s,
        "seconds": seconds,
        "share_of_ttft": seconds / ttft_s if ttft_s else None,
        "how": "top-level aten ops of one profiled prefill x median time of one torch.add on 1-element tensors",
    }


# ----------------------------------------------------------------------------- one method
def run_method(spec: BenchSpec, method: str, timings: bool = True) -> dict:
    """Every figure of one method (see the module docstring); seconds, MiB.

    ``timings=False`` leaves the timed rounds to :func:`run_interleaved` (empty ``runs``).
    """
    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    setup: MethodSetup = setup_method(spec, method)
    model = setup.model
    config = model.config
    synchronize = torch.cuda.synchronize if spec.device == "cuda" else (lambda: None)
    errors: dict[str, str] = {}
    result: dict = {
        "method": method,
        "label": METHOD_LABELS[method],
        "pruner": {"qwen2.5-vl": "none", "photon": "none", "photon-its": "its"}.get(method, method),
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_mib": sum(p.numel() * p.element_size() for p in model.parameters()) / MIB,
        "its_layer": int(config.its_layer),
        "its_threshold": setup.its_threshold,
        "errors": errors,
    }

    # Untimed prefill: counts the tokens and primes every kernel once.
    with torch.no_grad():
        output = model(**setup.inference, use_cache=True, logits_to_keep=1, **setup.pruning)
    keep = int(output.keep_mask.sum()) if output.keep_mask is not None else None
    stage = setup.pruner.stage
    entering = keep if stage == "vision" else setup.visual_tokens
    after = keep if stage == "language" else entering
    sequence = int(setup.inference["input_ids"].shape[1])
    result["tokens"] = {
        "vision_patches": setup.patches,
        "visual_in_prompt": setup.visual_tokens,
        "visual_entering_llm": entering,
        "visual_after_pruning": after,
        "text": sequence - setup.visual_tokens,
        "text_training": int(setup.training["input_ids"].shape[1]) - setup.visual_tokens,
        "cache_after_prefill": int(output.attention_mask.shape[1]),
        "budget": setup.kept_tokens,
        "new_tokens": spec.new_tokens,
    }
    del output

    # Peak memory: one answer, then one training step.
    probe = MemoryProbe(spec.device)
    memory: dict = {"method": probe.method}
    try:
        probe.begin()
        _generate(model, setup.inference, spec.new_tokens, setup.pruning)
        memory["inference_increase_mib"], memory["inference_peak_mib"] = probe.end()
        memory["resident_before_mib"] = probe.before
    except OUT_OF_MEMORY as error:
        errors["inference"] = f"out of memory: {str(error).splitlines()[0][:200]}"
    if spec.gradient_checkpointing:  # transformers 5.x renamed it; the old name warns
        getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    model.train()
    try:
        probe.begin()
        train_step(model, setup.training, setup.pruning)
        memory["train_increase_mib"], memory["train_peak_mib"] = probe.end()
    except OUT_OF_MEMORY as error:
        errors["train"] = f"out of memory: {str(error).splitlines()[0][:200]}"
        model.zero_grad(set_to_none=True)
    model.eval()
    memory["exact"] = probe.exact
    result["memory"] = memory
    _release(spec)

    # Timings: answers (vision, time to first token, decode), follow-ups, training steps.
    runs = empty_runs()
    if timings:
        rounds = TimingRounds(spec, setup, synchronize, runs, errors)
        try:
            for index in range(spec.warmup + spec.repeats):
                rounds.answer(record=index >= spec.warmup)
            for index in range(spec.warmup + spec.repeats):
                rounds.train(record=index >= spec.warmup)
        finally:
            rounds.close()
    result["runs"] = runs
    result["figures"] = figures_from_runs(spec, runs, int(setup.training["input_ids"].shape[0]))

    # One profiled answer: where the prefill's time goes.
    if "inference" not in errors:
        clock = StageClock(model, synchronize, detailed=True)
        try:
            clock.start()
            generation = _generate(model, setup.inference, spec.new_tokens, setup.pruning)
            stages = prefill_stages(clock.times(), config.text_config.num_hidden_layers, config.its_layer)
            stages["decode"] = generation.timings["decode"]
            result["stages_s"] = stages
        finally:
            clock.close()
        if method == "photon-its" and spec.torch_profile:
            result["torch_profile"] = torch_profile_top(model, setup.inference, setup.pruning, spec.device, synchronize)
    # Per-op framework overhead: op calls of one prefill times the fixed cost of one op dispatch.
    if "inference" not in errors:
        ops = count_prefill_ops(model, setup.inference, setup.pruning, synchronize)
        per_op = op_dispatch_seconds(spec.device, synchronize)
        result["framework_overhead"] = framework_overhead(ops, per_op, result["figures"].get("ttft_s"))
    return result


# ----------------------------------------------------------------------------- timed rounds
TIMED_RUNS = ("vision_s", "ttft_s", "llm_prefill_s", "decode_s", "follow_up_ttft_s", "train_step_s")


def empty_runs() -> dict[str, list[float]]:
    return {name: [] for name in TIMED_RUNS}


class TimingRounds:
    """The timed work of one method, one round at a time: an answer and a follow-up question, or a
    training step. Out-of-memory ends that kind of round for the method (recorded in ``errors``)."""

    def __init__(self, spec: BenchSpec, setup: MethodSetup, synchronize, runs: dict, errors: dict) -> None:
        self.spec, self.setup, self.synchronize = spec, setup, synchronize
        self.runs, self.errors = runs, errors
        self.clock = StageClock(setup.model, synchronize)

    def answer(self, record: bool, rewarm: bool = False) -> None:
        """One answer (vision, time to first token, decode), then one follow-up question.

        ``rewarm``: one untimed prefill first, so that what another method's round evicted from
        the CPU caches (a small vision tower fits in them) is back, as in a server answering
        with one model.
        """
        if "inference" in self.errors:
            return
        model, setup, spec = self.setup.model, self.setup, self.spec
        try:
            if rewarm:
                _generate(model, setup.inference, 1, setup.pruning)
            self.clock.start()
            generation = _generate(model, setup.inference, spec.new_tokens, setup.pruning)
            if generation.sequences.shape[1] != spec.new_tokens:
                raise RuntimeError(f"decoded {generation.sequences.shape[1]} tokens, expected {spec.new_tokens}")
            follow_up = follow_up_ttft(model, setup, self.synchronize)
        except OUT_OF_MEMORY as error:
            self.errors["inference"] = f"out of memory: {str(error).splitlines()[0][:200]}"
            _release(spec)
            return
        if record:
            vision = self.clock.vision_seconds()
            ttft = generation.timings["vision"] + generation.timings["prefill"]
            self.runs["vision_s"].append(vision)
            self.runs["ttft_s"].append(ttft)
            self.runs["llm_prefill_s"].append(ttft - vision)
            self.runs["decode_s"].append(generation.timings["decode"])
            self.runs["follow_up_ttft_s"].append(follow_up)

    def train(self, record: bool) -> None:
        """One training step: forward with labels + backward, batch of one."""
        if "train" in self.errors:
            return
        model = self.setup.model
        model.train()
        try:
            self.synchronize()
            started = time.perf_counter()
            train_step(model, self.setup.training, self.setup.pruning)
            self.synchronize()
            if record:
                self.runs["train_step_s"].append(time.perf_counter() - started)
        except OUT_OF_MEMORY as error:
            self.errors["train"] = f"out of memory: {str(error).splitlines()[0][:200]}"
            model.zero_grad(set_to_none=True)
        finally:
            model.eval()

    def close(self) -> None:
        self.clock.close()
        _release(self.spec)


def figures_from_runs(spec: BenchSpec, runs: dict[str, list[float]], batch_size: int) -> dict:
    """Medians of the timed runs and the rates derived from them."""
    figures = {name: median(values) for name, values in runs.items()}
    decode, ttft, step = figures["decode_s"], figures["ttft_s"], figures["train_step_s"]
    figures["decode_tokens_per_s"] = (spec.new_tokens - 1) / decode if decode else None
    figures["end_to_end_tokens_per_s"] = spec.new_tokens / (ttft + decode) if decode and ttft else None
    figures["train_samples_per_s"] = batch_size / step if step else None
    return figures


def run_interleaved(spec: BenchSpec, methods: list[str]) -> dict[str, dict]:
    """The timed rounds of every method in one process, interleaved: round r of every method, then
    round r + 1. A slow spell of the machine (another tenant, a frequency change) then hits every
    method alike instead of whichever happened to run then, so the ratios stay put.

    Returns per method ``runs``, ``figures`` and ``errors``. Memory is not measured here (the
    models share one heap); :func:`run_method` measures it in a process of its own.
    """
    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    synchronize = torch.cuda.synchronize if spec.device == "cuda" else (lambda: None)
    setups = {method: setup_method(spec, method) for method in methods}
    outcome = {method: {"runs": empty_runs(), "errors": {}} for method in methods}
    rounds = {
        method: TimingRounds(spec, setups[method], synchronize, outcome[method]["runs"], outcome[method]["errors"])
        for method in methods
    }
    try:
        for index in range(spec.warmup + spec.repeats):
            for method in methods:
                rounds[method].answer(record=index >= spec.warmup, rewarm=len(methods) > 1)
        for index in range(spec.warmup + spec.repeats):
            for method in methods:
                rounds[method].train(record=index >= spec.warmup)
    finally:
        for timed in rounds.values():
            timed.close()
    for method in methods:
        batch_size = int(setups[method].training["input_ids"].shape[0])
        outcome[method]["figures"] = figures_from_runs(spec, outcome[method]["runs"], batch_size)
    return outcome


def _release(spec: BenchSpec) -> None:
    gc.collect()
    if spec.device == "cuda":
        torch.cuda.empty_cache()


def machine_info(device: str, threads: int | None = None) -> dict:
    """What the numbers were measured on (``threads``: the workers' torch threads, None = torch's default)."""
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": _cpu_model(),
        "torch_threads": threads or torch.get_num_threads(),
    }
    try:
        import os

        info["cpu_cores_available"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
        try:
            import flash_attn

            info["flash_attn"] = flash_attn.__version__
        except ImportError:
            info["flash_attn"] = None
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
