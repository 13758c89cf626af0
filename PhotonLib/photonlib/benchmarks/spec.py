"""What a benchmark run measures: the presets, the five methods and every number they depend on.

A :class:`BenchSpec` is plain data (JSON-serialisable), so the parent process can hand it to a
fresh worker process per method (see :mod:`photonlib.benchmarks.runner`).

The five methods share the model shape and the volume; they differ only in how the volume is
cut into tokens and which pruner runs:

* ``qwen2.5-vl``: Qwen2.5-VL's own video input, temporal patch 2 x 14 x 14, three (grey)
  channels; a 140 x 280 x 280 volume gives 70 x 20 x 20 patches, 7,000 tokens after the 2 x 2
  merge (the paper's "7.0K" baseline). No pruning.
* ``photon``: Photon's one-channel 14^3 patches (10 x 20 x 20 patches, 1,000 tokens), no ITS.
* ``photon-its``: Photon with ITS after decoder layer ``its_layer`` (hard drop). With random
  weights the learned threshold means nothing, so it is set to keep ``keep_ratio`` of the visual
  tokens (default 0.39, the paper's 0.39K of 1.0K tokens); see :mod:`photonlib.benchmarks.build`.
* ``visionzip`` / ``hiprune``: the fixed-budget baselines on Photon's tokens, keeping exactly as
  many tokens as ITS keeps, dropped before the language model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from photonlib.errors import ConfigurationError

BASELINE = "qwen2.5-vl"
METHODS = ("qwen2.5-vl", "photon", "photon-its", "visionzip", "hiprune")
#: The worker name of the timed rounds of every method, interleaved in one process.
INTERLEAVED = "interleaved"
METHOD_LABELS = {
    "qwen2.5-vl": "Qwen2.5-VL input (2x14x14)",
    "photon": "Photon, no ITS",
    "photon-its": "Photon + ITS",
    "visionzip": "VisionZip-style",
    "hiprune": "HiPrune-style",
}

#: Paper, Table 3: Photon keeps 0.39K of 1.0K visual tokens on average on 3D-RAD.
PAPER_KEEP_RATIO = 0.39

QUESTION = "Is there a pleural effusion in this chest CT? Answer yes or no and say on which side."
ANSWER = "Yes, there is a small pleural effusion on the right side."
#: A second, different question about the same volume (about as long): the follow-up figure
#: reuses the vision tower's output and the question-independent prompt prefix of the first.
FOLLOW_UP_QUESTION = "Are there lung nodules in this chest CT? Answer yes or no and say in which lobe."


@dataclass(frozen=True)
class BenchSpec:
    """Every number of a benchmark run (see the presets below)."""

    preset: str
    model_preset: str  # a PhotonConfig preset
    text: dict[str, Any] = field(default_factory=dict)  # overrides of the text configuration
    vision: dict[str, Any] = field(default_factory=dict)  # overrides of the vision configuration
    volume_shape: tuple[int, int, int] = (140, 280, 280)  # (D, H, W) model grid
    tokenizer: str = "qwen"  # qwen (the real vocabulary) | compact (small BPE, vocabulary padded to vocab_size)
    vocab_size: int | None = None  # compact tokenizer only: the embedding / lm_head size
    device: str = "cpu"  # cpu | cuda
    dtype: str = "float32"  # float32 | bfloat16
    attn_implementation: str | None = None  # None: flash_attention_2 when importable with CUDA, else sdpa
    keep_ratio: float = PAPER_KEEP_RATIO  # ITS keep fraction, and the fixed budgets' kept fraction
    new_tokens: int = 32  # decoded per question (EOS ignored)
    repeats: int = 5
    warmup: int = 1
    gradient_checkpointing: bool = False  # for the training step
    isolate: bool = True  # one fresh worker process per method (honest CPU peak RSS)
    # Time every method in one process, round by round (A B C, A B C, ...): the machine's slow
    # spells then hit every method alike. Memory is still measured per method, in isolation.
    interleave: bool = True
    threads: int | None = None  # torch CPU threads (None: torch's default, one per core)
    torch_profile: bool = True  # torch.profiler top ops of Photon + ITS's prefill
    seed: int = 0
    methods: tuple[str, ...] = METHODS
    question: str = QUESTION
    answer: str = ANSWER
    follow_up_question: str = FOLLOW_UP_QUESTION  # asked second about the same volume

    def __post_init__(self) -> None:
        object.__setattr__(self, "volume_shape", tuple(int(v) for v in self.volume_shape))
        object.__setattr__(self, "methods", tuple(self.methods))
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ConfigurationError(f"unknown benchmark method(s) {unknown}; known: {', '.join(METHODS)}")
        if not self.methods:
            raise ConfigurationError("name at least one method")
        if not 0 < self.keep_ratio < 1:
            raise ConfigurationError(f"keep ratio must be in (0, 1), got {self.keep_ratio}")
        if self.repeats < 1 or self.warmup < 0:
            raise ConfigurationError(f"need repeats >= 1 and warmup >= 0, got {self.repeats} and {self.warmup}")
        if self.new_tokens < 2:
            raise ConfigurationError(f"decode at least 2 new tokens (the first comes from the prefill), got {self.new_tokens}")
        if self.threads is not None and self.threads < 1:
            raise ConfigurationError(f"threads must be at least 1, got {self.threads}")
        if self.device not in ("cpu", "cuda"):
            raise ConfigurationError(f"device must be cpu or cuda, got {self.device!r}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ConfigurationError(f"dtype must be float32 or bfloat16, got {self.dtype!r}")
        if self.tokenizer not in ("qwen", "compact"):
            raise ConfigurationError(f"tokenizer must be qwen or compact, got {self.tokenizer!r}")
        if self.follow_up_question.strip() == self.question.strip():
            raise ConfigurationError(
                "the follow-up question must differ from the first question (it measures a second, different question)"
            )
        depth, height, width = self.volume_shape
        if depth % 14 or height % 28 or width % 28:
            raise ConfigurationError(f"volume shape {self.volume_shape} must be multiples of (14, 28, 28)")

    @property
    def ordered_methods(self) -> list[str]:
        """The spec's methods in :data:`METHODS` order (the order they are measured and shown in)."""
        return [method for method in METHODS if method in self.methods]

    def replace(self, **changes: Any) -> BenchSpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["volume_shape"] = list(self.volume_shape)
        data["methods"] = list(self.methods)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchSpec:
        data = dict(data)
        data["volume_shape"] = tuple(data["volume_shape"])
        data["methods"] = tuple(data["methods"])
        return cls(**data)


def _vision(depth: int, hidden: int, heads: int, intermediate: int, out: int, full_attention: list[int]) -> dict:
    return {
        "depth": depth, "hidden_size": hidden, "num_heads": heads, "intermediate_size": intermediate,
        "out_hidden_size": out, "fullatt_block_indexes": full_attention,
    }  # fmt: skip


def _text(hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int, mrope: list[int]) -> dict:
    return {
        "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "intermediate_size": intermediate,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope},
    }  # fmt: skip


#: The preset the ratio goals (TTFT, decode, ITS overhead, follow-up) are judged on: ``cpu-compute``.
RATIO_PRESET = "cpu-compute"

PRESETS: dict[str, BenchSpec] = {
    # Qwen2.5-VL-3B scaled down for two CPU cores, keeping the 3B model's proportions where they
    # decide the ratios: MLP 5.4x hidden, 2 KV heads, head dim 64, ITS after layer 1 of 8 (the
    # default int(L / 4) - 1: layers 0 and 1, a quarter, see every token, as 9 of 36 in 3B),
    # lm_head about 11% of the decoder's weights (a 4,096-entry vocabulary; 151,936 would make the
    # lm_head 7x the decoder), vision MLP 2.7x hidden, and a volume whose 1,120 baseline tokens
    # give attention a share of the prefill like 7,000 tokens in 3B. The token ratio is 7:1 as in
    # 3B (temporal patch 2 vs 14). Quick (about a minute), but so small that costs which do not
    # scale with the tokens (Python, op dispatch, small kernels below their peak rate) weigh more
    # in Photon's 160-token prefill than in the baseline's 1,120: ratios on it understate what the
    # token counts allow.
    "cpu": BenchSpec(
        preset="cpu",
        model_preset="small",
        text=_text(hidden=256, layers=8, heads=4, kv_heads=2, intermediate=1376, mrope=[8, 12, 12]),
        vision=_vision(depth=4, hidden=128, heads=2, intermediate=342, out=256, full_attention=[1, 3]),
        volume_shape=(140, 112, 112),
        tokenizer="compact",
        vocab_size=4096,
    ),
    # The same structure and proportions as ``cpu`` (same volume, 7:1 tokens, 8 layers, ITS after
    # layer 1, 2 KV heads of 64, a compact vocabulary), twice as wide: LLM 512 hidden (8 heads of
    # 64, MLP 2,752 = 5.4x), vision 256 hidden (4 heads of 64, MLP 684 = 2.7x) into 512. About 4x
    # the arithmetic per token of ``cpu``, so compute, not per-op framework overhead, dominates
    # Photon + ITS's time to first token on two cores. The vocabulary doubles to 8,192 so that the
    # lm_head stays about 11% of the decoder's weights as in 3B (4,096 x 512 would be 5%); it is
    # read at every decode step, so its share sets the decode limit. The ratio goals are judged
    # on this preset.
    "cpu-compute": BenchSpec(
        preset="cpu-compute",
        model_preset="small",
        # Nine rounds: on a shared two-core machine a decode step of one model swings by 10 to 15 %
        # within a minute, and the ratios are judged here.
        repeats=9,
        text=_text(hidden=512, layers=8, heads=8, kv_heads=2, intermediate=2752, mrope=[8, 12, 12]),
        vision=_vision(depth=4, hidden=256, heads=4, intermediate=684, out=512, full_attention=[1, 3]),
        volume_shape=(140, 112, 112),
        tokenizer="compact",
        vocab_size=8192,
    ),
    "qwen2.5-vl-3b": BenchSpec(
        preset="qwen2.5-vl-3b",
        model_preset="qwen2.5-vl-3b",
        volume_shape=(140, 280, 280),
        tokenizer="qwen",
        device="cuda",
        dtype="bfloat16",
        interleave=False,  # five 3B models at once would need ~40 GB of GPU memory for the weights alone
        gradient_checkpointing=True,  # 7,000 tokens and 28,000 vision patches do not train on one GPU without it
    ),
    # For the tests (not advertised): seconds on a CPU.
    "tiny": BenchSpec(
        preset="tiny",
        model_preset="tiny",
        volume_shape=(56, 56, 56),
        tokenizer="compact",
        vocab_size=512,
        new_tokens=4,
        repeats=1,
        warmup=0,
    ),
}

PUBLIC_PRESETS = ("cpu", "cpu-compute", "qwen2.5-vl-3b")


def preset(name: str, **changes: Any) -> BenchSpec:
    try:
        spec = PRESETS[name]
    except KeyError:
        raise ConfigurationError(f"unknown benchmark preset {name!r}; use one of {', '.join(PUBLIC_PRESETS)}") from None
    return spec.replace(**{key: value for key, value in changes.items() if value is not None})
