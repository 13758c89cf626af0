"""``photon bench``: token counts per method, the report's schema, ratios and limits, the CLI, the plot.

One in-process run of the hidden ``tiny`` preset (seconds) serves most tests; one CLI run of one
method checks the worker process, the JSON file and the PNG end to end.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
import subprocess
import sys

import pytest
import torch

from photonlib.benchmarks import costmodel
from photonlib.benchmarks.build import (
    budget_count,
    build_model,
    build_tokenizer,
    calibrate_its,
    model_config,
    setup_method,
)
from photonlib.benchmarks.measure import count_prefill_ops, op_dispatch_seconds
from photonlib.benchmarks.report import format_table, write_json, write_plot
from photonlib.benchmarks.runner import RATIO_FIGURES, SCHEMA, assemble, run_bench
from photonlib.benchmarks.spec import BASELINE, METHODS, PUBLIC_PRESETS, RATIO_PRESET, preset
from photonlib.cli.main import main
from photonlib.model import PhotonConfig, PhotonForConditionalGeneration

FIGURES = ("vision_s", "ttft_s", "llm_prefill_s", "decode_s", "train_step_s", "decode_tokens_per_s",
           "end_to_end_tokens_per_s", "train_samples_per_s")  # fmt: skip
STAGES = ("vision", "inputs", "llm_setup", "llm_layers_before_its", "its_scoring", "llm_its_layer", "its_select",
          "llm_layers_after_its", "norm_lm_head", "decode")  # fmt: skip


@pytest.fixture(scope="module")
def spec():
    return preset("tiny", repeats=2, threads=1, isolate=False)


@pytest.fixture(scope="module")
def report(spec):
    return run_bench(spec)


def test_token_counts_per_method(report, spec):
    methods = report["methods"]
    assert list(methods) == list(METHODS)
    base, photon = methods[BASELINE]["tokens"], methods["photon"]["tokens"]
    # Temporal patch 2 instead of 14: seven times the patches and the tokens of the same volume.
    assert base["visual_in_prompt"] == 7 * photon["visual_in_prompt"] == 7 * 16
    assert base["vision_patches"] == 7 * photon["vision_patches"]
    budget = round(spec.keep_ratio * photon["visual_in_prompt"])
    expected = {  # (entering the language model, after pruning)
        BASELINE: (112, 112),
        "photon": (16, 16),
        "photon-its": (16, budget),
        "visionzip": (budget, budget),
        "hiprune": (budget, budget),
    }
    for method, (entering, after) in expected.items():
        tokens = methods[method]["tokens"]
        assert (tokens["visual_entering_llm"], tokens["visual_after_pruning"]) == (entering, after), method
        assert tokens["budget"] == budget
        assert tokens["text"] == base["text"] > 0  # the same prompt for every method
        # The KV cache after the prefill holds exactly the text and the kept visual tokens.
        assert tokens["cache_after_prefill"] == tokens["text"] + after


def test_the_3b_preset_cuts_7000_and_1000_tokens():
    spec = preset("qwen2.5-vl-3b")
    photon = model_config(spec, "photon")
    qwen = model_config(spec, BASELINE)
    assert qwen.patch_grid(spec.volume_shape) == (70, 20, 20)
    assert math.prod(qwen.token_grid(spec.volume_shape)) == 7000
    assert math.prod(photon.token_grid(spec.volume_shape)) == 1000
    assert budget_count(spec, 1000) == 390  # the paper's 0.39K tokens
    assert (spec.device, spec.dtype) == ("cuda", "bfloat16")
    assert photon.text_config.num_hidden_layers == 36 and photon.its_layer == 8


def test_cpu_preset_keeps_the_7_to_1_ratio():
    spec = preset("cpu")
    photon = math.prod(model_config(spec, "photon").token_grid(spec.volume_shape))
    qwen = math.prod(model_config(spec, BASELINE).token_grid(spec.volume_shape))
    assert qwen == 7 * photon


def test_cpu_compute_preset_is_cpu_twice_as_wide():
    """The preset the ratio goals use: the cpu preset's structure, 7:1 tokens, a wider model."""
    assert RATIO_PRESET == "cpu-compute" and RATIO_PRESET in PUBLIC_PRESETS and "cpu" in PUBLIC_PRESETS
    spec, small = preset("cpu-compute"), preset("cpu")
    assert (spec.device, spec.dtype, spec.volume_shape) == ("cpu", "float32", small.volume_shape)
    tokenizer = build_tokenizer(spec)
    photon, qwen = model_config(spec, "photon", tokenizer), model_config(spec, BASELINE, tokenizer)
    assert (
        math.prod(qwen.token_grid(spec.volume_shape)) == 7 * math.prod(photon.token_grid(spec.volume_shape)) == 7 * 160
    )
    text, vision = photon.text_config, photon.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads) == (
        512,
        8,
        8,
        2,
    )
    assert text.intermediate_size / text.hidden_size == pytest.approx(5.4, abs=0.05)  # 3B: 11008 / 2048
    assert vision.intermediate_size / vision.hidden_size == pytest.approx(3420 / 1280, abs=0.05)
    assert vision.out_hidden_size == text.hidden_size and photon.its_layer == 1  # layers 0, 1 of 8 see every token
    # The lm_head stays about 11% of the decoder's weights, as in 3B (151,936 x 2048 against 36 layers).
    lm_head = text.vocab_size * text.hidden_size
    assert 0.09 < lm_head / (costmodel.decode_weight_values(photon) - lm_head) < 0.13
    # About 4x the arithmetic per token of cpu: that is what makes compute dominate.
    wide = costmodel.decoder_linear_per_token(photon)
    assert 3.5 < wide / costmodel.decoder_linear_per_token(model_config(small, "photon")) < 4.5


def test_follow_up_question_must_differ():
    spec = preset("tiny")
    assert spec.follow_up_question != spec.question and spec.follow_up_question.strip()
    assert abs(len(spec.follow_up_question) - len(spec.question)) < 20
    with pytest.raises(ValueError, match="follow-up question must differ"):
        spec.replace(follow_up_question=spec.question + " ")


def test_decode_bytes_hand_computed():
    """Bytes of one decode step for tiny (hidden 64, 4 layers, 4 heads of 16, 2 KV heads, MLP 128, vocab 512)."""
    tiny = preset("tiny")
    config = model_config(tiny, "photon", build_tokenizer(tiny))
    assert config.text_config.vocab_size == 512
    # Per layer: q 64*64 + 64, k and v 64*32 + 32 each, o 64*64, MLP 3*64*128, two norms of 64.
    per_layer = (4096 + 64) + 2 * (2048 + 32) + 4096 + 3 * 8192 + 128
    assert per_layer == 37120
    weights = 4 * per_layer + 64 + 512 * 64  # + final norm + (tied) lm_head
    assert costmodel.decode_weight_values(config) == weights == 181312
    # KV cache: 100 tokens after the prefill + half of the 4 steps after the first token = 102
    # cached tokens on average; keys and values of 2 heads of 16 in each of 4 layers.
    cache = 4 * 2 * 32 * 102
    assert costmodel.decode_bytes_per_token(config, 100, 5, value_bytes=2) == 2 * (weights + cache) == 414848
    assert costmodel.decode_bytes_per_token(config, 100, 5, value_bytes=4) == 4 * (weights + cache)
    # The same weights as the model's own parameters (vision tower and ITS's MLP are not read).
    model = PhotonForConditionalGeneration(config)
    language = model.model.language_model
    read = {id(p): p.numel() for name, p in language.named_parameters() if "token_scheduler" not in name}
    read[id(model.lm_head.weight)] = model.lm_head.weight.numel()
    assert sum(read.values()) == weights
    # The decode limit is the ratio of bytes, below the FLOP ratio (2 KV heads: cache reads are
    # small next to attention's arithmetic over 4 query heads); the FLOP ratio stays in the report.
    counts = {"text": 20, "text_training": 30, "new_tokens": 5}
    base = costmodel.method_cost(config, {**counts, "visual_entering_llm": 300, "visual_after_pruning": 300},
                                 (7, 4, 4), channels=1, its=False, value_bytes=2)  # fmt: skip
    small = costmodel.method_cost(config, {**counts, "visual_entering_llm": 40, "visual_after_pruning": 40},
                                  (1, 4, 4), channels=1, its=False, value_bytes=2)  # fmt: skip
    limits = costmodel.limit_ratios(small, base)
    expected = (weights + 4 * 2 * 32 * 322) / (weights + 4 * 2 * 32 * 62)
    assert limits["decode_tokens_per_s"] == pytest.approx(expected)
    assert 1 < limits["decode_tokens_per_s"] < limits["decode_flop_limit"]


def test_report_schema_survives_json(report, tmp_path):
    path = write_json(report, tmp_path / "bench.json")
    data = json.loads(path.read_text())
    assert data["schema"] == SCHEMA and data["preset"] == "tiny" and data["baseline"] == BASELINE
    assert {"platform", "torch", "cpu"} <= set(data["machine"])
    for method, result in data["methods"].items():
        assert set(FIGURES) <= set(result["figures"]), method
        assert all(result["figures"][name] > 0 for name in FIGURES), method
        assert set(STAGES) == set(result["stages_s"]), method
        assert {"inference_increase_mib", "inference_peak_mib", "train_increase_mib", "method"} <= set(result["memory"])
        assert result["errors"] == {}
        assert set(data["ratios"][method]) == set(RATIO_FIGURES)
    assert data["profile"]["method"] == "photon-its"
    assert data["profile"]["torch_top_ops"] and all(op["self_ms"] >= 0 for op in data["profile"]["torch_top_ops"])


def test_framework_overhead_per_method(report):
    """Top-level op calls of one prefill x the cost of one dispatch, as a share of the median TTFT."""
    ops = {}
    for method, result in report["methods"].items():
        overhead = result["framework_overhead"]
        ops[method] = overhead["ops_per_prefill"]
        assert isinstance(ops[method], int) and ops[method] > 50, method
        assert 0 < overhead["per_op_s"] < 1e-3
        assert overhead["seconds"] == pytest.approx(ops[method] * overhead["per_op_s"])
        assert overhead["share_of_ttft"] == pytest.approx(overhead["seconds"] / result["figures"]["ttft_s"])
        assert 0 < overhead["share_of_ttft"] < 1, method
    # The counts follow the work: the baseline's vision tower attends per depth slab (7x the slabs),
    # ITS adds its scoring and gathers to Photon's prefill.
    assert ops[BASELINE] > ops["photon"]
    assert ops["photon-its"] > ops["photon"]


def test_op_count_is_top_level_aten_calls():
    weight, bias, x = torch.ones(3, 4), torch.ones(3), torch.ones(2, 4)

    def two_ops(**_):
        return torch.add(torch.nn.functional.linear(x, weight, bias), 1)  # linear runs addmm/t inside

    assert count_prefill_ops(two_ops, {}, {}, lambda: None) == 2
    assert 0 < op_dispatch_seconds("cpu", lambda: None) < 1e-3


def test_end_to_end_limit_weighs_prefill_and_decode(report):
    """Whole answer: the baseline's TTFT scaled by the TTFT limit, its decode time by the bytes limit."""
    base = report["methods"][BASELINE]["figures"]
    for method, entries in report["ratios"].items():
        ttft, decode = entries["ttft_s"]["limit"], entries["decode_tokens_per_s"]["limit"]
        expected = (base["ttft_s"] + base["decode_s"]) / (base["ttft_s"] * ttft + base["decode_s"] / decode)
        assert entries["end_to_end_tokens_per_s"]["limit"] == pytest.approx(expected), method
        cost, base_cost = report["methods"][method]["cost"], report["methods"][BASELINE]["cost"]
        assert decode == pytest.approx(base_cost["decode_bytes_per_token"] / cost["decode_bytes_per_token"])
        assert entries["decode_tokens_per_s"]["flop_limit"] == pytest.approx(
            base_cost["decode_flops_per_token"] / cost["decode_flops_per_token"]
        )
        assert entries["decode_tokens_per_s"]["limit_from"] == "bytes read per decode step"
    its = report["ratios"]["photon-its"]
    assert its["end_to_end_tokens_per_s"]["limit"] < its["end_to_end_tokens_per_s"]["flop_limit"]


def test_figures_are_medians_of_the_runs(report, spec):
    for result in report["methods"].values():
        runs, figures = result["runs"], result["figures"]
        for name in ("vision_s", "ttft_s", "decode_s", "train_step_s"):
            assert len(runs[name]) == spec.repeats
            assert figures[name] == pytest.approx(statistics.median(runs[name]))
        for vision, ttft, prefill in zip(runs["vision_s"], runs["ttft_s"], runs["llm_prefill_s"]):
            assert prefill == pytest.approx(ttft - vision)
        assert figures["decode_tokens_per_s"] == pytest.approx((spec.new_tokens - 1) / figures["decode_s"])
        assert figures["end_to_end_tokens_per_s"] == pytest.approx(
            spec.new_tokens / (figures["ttft_s"] + figures["decode_s"])
        )
        assert figures["train_samples_per_s"] == pytest.approx(1 / figures["train_step_s"])


def test_ratios_come_from_the_measured_numbers(report):
    base = report["methods"][BASELINE]
    for method, entries in report["ratios"].items():
        result = report["methods"][method]
        for figure, entry in entries.items():
            value = result["figures"].get(figure, result["memory"].get(figure))
            reference = base["figures"].get(figure, base["memory"].get(figure))
            assert entry["method"] == value and entry["baseline"] == reference
            assert entry["achieved"] == pytest.approx(value / reference)
            if entry["limit"] is not None:
                expected = (
                    entry["limit"] / entry["achieved"]
                    if entry["kind"] == "time"
                    else entry["achieved"] / entry["limit"]
                )
                assert entry["fraction_of_limit"] == pytest.approx(expected)
    assert all(entry["achieved"] == pytest.approx(1.0) for entry in report["ratios"][BASELINE].values())
    assert all(entry["limit"] in (None, pytest.approx(1.0)) for entry in report["ratios"][BASELINE].values())


def test_limits_follow_the_token_counts(report):
    limits = {method: {f: e["limit"] for f, e in entries.items()} for method, entries in report["ratios"].items()}
    # Fewer tokens, less arithmetic: every Photon variant's prefill limit is below the baseline's,
    # ITS below Photon without it, and dropping before the LLM below dropping after layer k.
    assert limits["photon"]["llm_prefill_s"] < 1
    assert limits["photon-its"]["llm_prefill_s"] < limits["photon"]["llm_prefill_s"]
    assert limits["visionzip"]["llm_prefill_s"] < limits["photon-its"]["llm_prefill_s"]
    assert limits["visionzip"]["llm_prefill_s"] == pytest.approx(limits["hiprune"]["llm_prefill_s"])
    assert limits["photon"]["train_samples_per_s"] > 1
    assert limits["photon"]["vision_s"] < 1


def test_3b_limits_from_the_token_counts():
    """The real shapes: 1/7 of the vision patches, and ITS's prefill limit between Photon's and VisionZip's."""
    spec = preset("qwen2.5-vl-3b")
    photon, qwen = model_config(spec, "photon"), model_config(spec, BASELINE)

    def tokens(entering, after):
        return {
            "text": 44,
            "visual_entering_llm": entering,
            "visual_after_pruning": after,
            "text_training": 59,
            "new_tokens": 32,
        }

    baseline = costmodel.method_cost(qwen, tokens(7000, 7000), (70, 20, 20), channels=3, its=False, value_bytes=2)
    limits = {
        name: costmodel.limit_ratios(
            costmodel.method_cost(photon, counts, (10, 20, 20), channels=1, its=its, value_bytes=2), baseline
        )
        for name, counts, its in (("photon", tokens(1000, 1000), False), ("its", tokens(1000, 390), True),
                                  ("visionzip", tokens(390, 390), False))
    }  # fmt: skip
    # Same blocks, 1/7 of the patches; only the patch embedding's kernel differs (14^3 vs 3 x 2 x 14^2 voxels).
    assert 1 / 7 < limits["photon"]["vision_s"] < 1 / 7 + 0.002
    assert (
        limits["visionzip"]["llm_prefill_s"]
        < limits["its"]["llm_prefill_s"]
        < limits["photon"]["llm_prefill_s"]
        < 1 / 7
    )
    assert 1 < limits["photon"]["decode_tokens_per_s"] < limits["its"]["decode_tokens_per_s"]
    # Decoding reads 6.2 GB of bf16 weights per token; the baseline's 7,044-token cache adds 0.26 GB.
    assert limits["its"]["decode_tokens_per_s"] == pytest.approx(1.04, abs=0.005)
    assert limits["its"]["decode_flop_limit"] == pytest.approx(1.31, abs=0.005)


def test_cost_model_counts_layers_and_attention():
    config = PhotonConfig.from_preset("tiny")
    layers, k = config.text_config.num_hidden_layers, config.its_layer
    linear = costmodel.decoder_linear_per_token(config)
    width = config.text_config.num_attention_heads * (
        config.text_config.hidden_size // config.text_config.num_attention_heads
    )
    layer = lambda n: n * linear + 4 * n * n * width  # noqa: E731
    head = 2 * config.text_config.hidden_size * config.text_config.vocab_size
    assert costmodel.language_forward(config, 100, 100, its=False, logits_positions=1) == pytest.approx(
        layers * layer(100) + head
    )
    with_its = costmodel.language_forward(config, 100, 40, its=True, logits_positions=1)
    expected = (k + 1) * layer(100) + (layers - k - 1) * layer(40) + costmodel.its_scoring(config, 100) + head
    assert with_its == pytest.approx(expected)


def test_photon_and_baseline_run_without_any_scoring(spec):
    for method in (BASELINE, "photon"):
        setup = setup_method(spec, method)
        with torch.no_grad():
            output = setup.model(**setup.inference, logits_to_keep=1, **setup.pruning)
        assert output.keep_mask is None and output.kept_positions is None
    qwen = setup_method(spec, BASELINE).model.model.visual.patch_embed
    assert (qwen.in_channels, qwen.temporal_patch_size, qwen.patch_size) == (3, 2, 14)


@pytest.mark.parametrize("keep_ratio", [0.25, 0.75])
def test_its_keeps_the_stated_fraction(spec, keep_ratio):
    setup = setup_method(spec.replace(keep_ratio=keep_ratio), "photon-its")
    with torch.no_grad():
        output = setup.model(**setup.inference, logits_to_keep=1, **setup.pruning)
    assert int(output.keep_mask.sum()) == round(keep_ratio * 16) == setup.kept_tokens
    scheduler = setup.model.model.language_model.token_scheduler
    assert float(scheduler.mlp[2].weight.detach().abs().sum()) == 0  # a constant threshold
    assert 0 < setup.its_threshold["theta"] < scheduler.threshold_scale


def test_bf16_build_keeps_the_threshold_exact(spec):
    """The qwen2.5-vl-3b preset's path (bf16 weights, fp32 ITS threshold MLP), on tiny shapes."""
    bf16 = spec.replace(dtype="bfloat16")
    config = model_config(bf16, "photon-its")
    model = build_model(bf16, config, qwen_input=False)
    assert model.model.language_model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    assert model.model.language_model.token_scheduler.mlp[2].weight.dtype == torch.float32
    setup = setup_method(bf16, "photon-its")
    assert setup.inference["pixel_values"].dtype == torch.bfloat16
    with torch.no_grad():
        output = setup.model(**setup.inference, logits_to_keep=1, **setup.pruning)
    assert int(output.keep_mask.sum()) == setup.kept_tokens
    assert calibrate_its  # the calibration ran inside setup_method


def test_table_and_plot(report, tmp_path):
    table = format_table(report)
    for method in METHODS:
        assert report["methods"][method]["label"] in table
    assert "x (" in table and "ITS overhead" in table
    assert "overhead / TTFT" in table
    measured = any(r["figures"].get("follow_up_ttft_s") is not None for r in report["methods"].values())
    assert ("follow-up / first" in table) == measured
    path = write_plot(report, tmp_path / "bench.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def _table_row(table: str, label: str) -> list[str]:
    """The cells of ``label``'s row in the follow-up / overhead table (the one with a follow-up column)."""
    lines = table.splitlines()
    start = next(i for i, line in enumerate(lines) if "follow-up / first" in line)
    row = next(line for line in lines[start:] if line.startswith(label))
    return row[len(label) :].split()


def test_table_with_follow_up_figures(report, spec):
    """A follow-up TTFT becomes a ratio and a column; a method without one shows "-"."""
    results = copy.deepcopy(report["methods"])
    for method, result in results.items():
        figures = result["figures"]
        figures.pop("follow_up_ratio", None)
        figures["follow_up_ttft_s"] = 0.25 * figures["ttft_s"] if method in ("photon", "photon-its") else None
    with_follow_up = assemble(spec, results)
    its, base = with_follow_up["methods"]["photon-its"]["figures"], with_follow_up["methods"][BASELINE]["figures"]
    assert its["follow_up_ratio"] == pytest.approx(0.25)
    assert "follow_up_ratio" not in base  # no follow-up measured for the baseline here
    table = format_table(with_follow_up)
    assert "follow-up TTFT s" in table and "follow-up / first" in table
    # TTFT s, follow-up TTFT s, follow-up / first, then the overhead columns.
    assert _table_row(table, "Photon + ITS")[2] == "0.25"
    assert _table_row(table, results[BASELINE]["label"])[1:3] == ["-", "-"]
    # Neither follow-up nor overhead (an older worker): the table still renders, without that block.
    for result in results.values():
        for name in ("follow_up_ttft_s", "follow_up_ratio"):
            result["figures"].pop(name, None)
        result.pop("framework_overhead")
    bare = format_table(assemble(spec, results))
    assert "follow-up" not in bare and "overhead / TTFT" not in bare and "Photon + ITS" in bare


def test_3b_preset_without_cuda_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["bench", "--preset", "qwen2.5-vl-3b"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "needs a CUDA GPU" in lines[0] and "--preset cpu" in lines[0]
    assert captured.out == ""


def test_unknown_preset_is_one_line(capsys):
    assert main(["bench", "--preset", "h100"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "cpu, cpu-compute, qwen2.5-vl-3b" in lines[0]


def test_cli_end_to_end_with_worker_processes(tmp_path):
    out, plot = tmp_path / "bench.json", tmp_path / "bench.png"
    completed = subprocess.run(
        [sys.executable, "-m", "photonlib.cli.main", "bench", "--preset", "tiny", "--methods", "photon-its",
         "--threads", "1", "--json", str(out), "--plot", str(plot)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    data = json.loads(out.read_text())
    assert list(data["methods"]) == ["photon-its"]
    assert data["spec"]["isolate"] is True  # measured in its own worker process
    its = data["methods"]["photon-its"]
    assert its["tokens"]["visual_after_pruning"] == 6
    assert its["memory"]["method"] == "VmHWM after clear_refs" and its["memory"]["train_increase_mib"] > 0
    assert data["ratios"] == {}  # no baseline in this run, so no ratios
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert "Photon + ITS" in completed.stdout


def test_methods_are_timed_round_by_round_in_one_process(monkeypatch):
    """Interleaved: round r of every method before round r + 1, so a slow spell of the machine
    hits every method alike; memory is still measured per method."""
    from photonlib.benchmarks import measure

    order = []
    answer = measure.TimingRounds.answer

    def recording(self, record, rewarm=False):
        order.append(self.setup.pruner.name)
        return answer(self, record, rewarm)

    monkeypatch.setattr(measure.TimingRounds, "answer", recording)
    spec = preset("tiny", repeats=2, warmup=1, threads=1, isolate=False, methods=("photon", "photon-its"))
    report = run_bench(spec)
    # NoPruner is "off" for photon, ITS is "its": three rounds (one warm-up), alternating.
    assert order == ["off", "its"] * 3
    for result in report["methods"].values():
        assert result["timed"].startswith("interleaved")
        assert len(result["runs"]["ttft_s"]) == len(result["runs"]["follow_up_ttft_s"]) == 2
        assert result["memory"]["inference_peak_mib"] > 0
    order.clear()
    sequential = run_bench(spec.replace(interleave=False))
    assert order == ["off"] * 3 + ["its"] * 3 and "timed" not in sequential["methods"]["photon"]


def test_follow_up_flops_hand_computed():
    """Layers 0..k: the new tokens against the whole prompt; later layers: kept visual tokens and
    the text after the leading part against all kept tokens; then one row of logits."""
    config = PhotonConfig.from_preset("tiny")
    text = config.text_config
    layers, k = text.num_hidden_layers, config.its_layer
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    q, kv, h, inter = text.num_attention_heads * head_dim, text.num_key_value_heads * head_dim, text.hidden_size, text.intermediate_size
    linear = 2 * (h * q + 2 * h * kv + q * h + 3 * h * inter)
    tokens = {"visual_entering_llm": 64, "visual_after_pruning": 20}
    shape = {"new": 12, "prefix": 80, "leading": 10, "text": 28}
    early = (k + 1) * (12 * linear + 4 * 12 * 92 * q)
    late = (layers - k - 1) * (38 * linear + 4 * 38 * 48 * q)
    expected = early + late + 2 * h * text.vocab_size
    assert costmodel.follow_up_flops(config, tokens, shape, its=True) == pytest.approx(expected)
    without_its = costmodel.follow_up_flops(config, tokens, shape, its=False)
    assert without_its > expected  # every visual token runs through the later layers again


def test_follow_up_limit_is_reported(report):
    figures = report["methods"]["photon-its"]["figures"]
    assert 0 < figures["follow_up_limit"] < 1
    assert f"({figures['follow_up_limit']:.2f})" in format_table(report)
    assert "follow_up_limit" not in report["methods"]["visionzip"]["figures"]
