"""``photon bench``: token counts per method, the report's schema, ratios and limits, the CLI, the plot.

One in-process run of the hidden ``tiny`` preset (seconds) serves most tests; one CLI run of one
method checks the worker process, the JSON file and the PNG end to end.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys

import pytest
import torch

from photonlib.benchmarks import costmodel
from photonlib.benchmarks.build import budget_count, build_model, calibrate_its, model_config, setup_method
from photonlib.benchmarks.report import format_table, write_json, write_plot
from photonlib.benchmarks.runner import RATIO_FIGURES, SCHEMA, run_bench
from photonlib.benchmarks.spec import BASELINE, METHODS, preset
from photonlib.cli.main import main
from photonlib.model import PhotonConfig

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


def test_figures_are_medians_of_the_runs(report, spec):
    for result in report["methods"].values():
        runs, figures = result["runs"], result["figures"]
        for name in ("vision_s", "ttft_s", "decode_s", "train_step_s"):
            assert len(runs[name]) == spec.repeats
            assert figures[name] == pytest.approx(statistics.median(runs[name]))
        for vision, ttft, prefill in zip(runs["vision_s"], runs["ttft_s"], runs["llm_prefill_s"]):
            assert prefill == pytest.approx(ttft - vision)
        assert figures["decode_tokens_per_s"] == pytest.approx((spec.new_tokens - 1) / figures["decode_s"])
        assert figures["end_to_end_tokens_per_s"] == pytest.approx(spec.new_tokens / (figures["ttft_s"] + figures["decode_s"]))
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
                expected = entry["limit"] / entry["achieved"] if entry["kind"] == "time" else entry["achieved"] / entry["limit"]
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
        return {"text": 44, "visual_entering_llm": entering, "visual_after_pruning": after, "text_training": 59, "new_tokens": 32}

    baseline = costmodel.method_cost(qwen, tokens(7000, 7000), (70, 20, 20), channels=3, its=False)
    limits = {
        name: costmodel.limit_ratios(costmodel.method_cost(photon, counts, (10, 20, 20), channels=1, its=its), baseline)
        for name, counts, its in (("photon", tokens(1000, 1000), False), ("its", tokens(1000, 390), True),
                                  ("visionzip", tokens(390, 390), False))
    }  # fmt: skip
    # Same blocks, 1/7 of the patches; only the patch embedding's kernel differs (14^3 vs 3 x 2 x 14^2 voxels).
    assert 1 / 7 < limits["photon"]["vision_s"] < 1 / 7 + 0.002
    assert limits["visionzip"]["llm_prefill_s"] < limits["its"]["llm_prefill_s"] < limits["photon"]["llm_prefill_s"] < 1 / 7
    assert 1 < limits["photon"]["decode_tokens_per_s"] < limits["its"]["decode_tokens_per_s"]


def test_cost_model_counts_layers_and_attention():
    config = PhotonConfig.from_preset("tiny")
    layers, k = config.text_config.num_hidden_layers, config.its_layer
    linear = costmodel.decoder_linear_per_token(config)
    width = config.text_config.num_attention_heads * (config.text_config.hidden_size // config.text_config.num_attention_heads)
    layer = lambda n: n * linear + 4 * n * n * width  # noqa: E731
    head = 2 * config.text_config.hidden_size * config.text_config.vocab_size
    assert costmodel.language_forward(config, 100, 100, its=False, logits_positions=1) == pytest.approx(layers * layer(100) + head)
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
    path = write_plot(report, tmp_path / "bench.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


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
    assert len(lines) == 1 and "cpu, qwen2.5-vl-3b" in lines[0]


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
