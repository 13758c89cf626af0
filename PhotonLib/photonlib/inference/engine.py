"""Asking Photon about a volume: one engine for ``photon ask``, the HTTP backend and evaluation.

The work splits in two so a second question about the same volume is cheap:

* :meth:`PhotonEngine.prepare` (question-independent): preprocess the volume to the model
  grid, cut it into patches (once per volume), run the vision tower. The result, a
  :class:`PreparedCase`, can be cached by whoever holds it (the server keeps a bounded cache
  keyed by volume content).
* :meth:`PhotonEngine.ask` (per question): prompt, prefill with ITS, decode; returns the answer,
  token counts, timings and the keep-probability map on the (t, h, w) token grid, which
  :meth:`PhotonEngine.heatmap` maps back onto the volume's own voxels. The first question also
  saves the prompt's question-independent prefix through the ITS layer in the case
  (:mod:`photonlib.model.prompt_prefix`), so a follow-up question prefills only its own tokens
  there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from photonlib.errors import ConfigurationError, PhotonEnvironmentError
from photonlib.model import PhotonConfig, PhotonForConditionalGeneration, PhotonProcessor, Turn
from photonlib.model.configuration import PRUNING_MODES
from photonlib.model.prompt_prefix import PrefixCache
from photonlib.model.pruning.budget import check_budget
from photonlib.model.pruning.interface import TokenPruner
from photonlib.model.transformers_adapter import quiet_loading
from photonlib.volume import PreparedVolume, Volume, map_to_source, prepare_volume, write_heatmap

#: The model shipped inside the package (PhotonLib/configs/phantom-demo*.yaml; see its README.md).
EMBEDDED_MODEL_DIR = Path(__file__).resolve().parents[1] / "pretrained" / "photon-demo"


@dataclass
class PreparedCase:
    """A volume ready for questions: model input, vision-tower output and the way back."""

    prepared: PreparedVolume
    pixel_values: torch.Tensor
    video_grid_thw: torch.Tensor  # (1, 3)
    visual_embeddings: list[torch.Tensor]
    timings: dict[str, float] = field(default_factory=dict)  # preprocess, vision (seconds)
    prefix_cache: PrefixCache = field(default_factory=PrefixCache)  # the latest prompt prefix through layer k

    @property
    def tokens_total(self) -> int:
        return int(self.visual_embeddings[0].shape[0])

    def nbytes(self) -> int:
        """Memory held, for cache accounting (the saved prompt prefix included)."""
        tensors = [self.pixel_values, *self.visual_embeddings]
        held = self.prepared.array.nbytes + sum(t.element_size() * t.nelement() for t in tensors)
        return int(held + self.prefix_cache.nbytes())


@dataclass
class Answer:
    answer: str
    tokens_total: int
    tokens_kept: int
    keep_probability: np.ndarray  # (t, h, w) float32
    keep_mask: np.ndarray  # (t, h, w) bool
    timings: dict[str, float]  # seconds: preprocess, vision, prefill, decode, total
    stopped: bool = False  # cancelled before the answer was complete
    prefix_reused: bool = False  # a follow-up: the prompt's prefix through the ITS layer was reused


class PhotonEngine:
    """A loaded model + processor on one device. Thread-safe for one caller at a time (a lock)."""

    def __init__(self, model: PhotonForConditionalGeneration, processor: PhotonProcessor, name: str, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.processor = processor
        self.name = name
        self.device = torch.device(device)
        self.lock = threading.Lock()  # one GPU worker: generation is not re-entrant
        # What runs: the saved configuration's choice unless use_pruning() says otherwise.
        self.pruner_name, self.pruning_budget = model.config.pruner, model.config.pruning_budget
        self.pruner: TokenPruner = model.pruner
        self.pruning_mode: str = model.config.pruning_mode

    def use_pruning(self, pruner: str | None = None, budget: float | None = None, mode: str | None = None) -> None:
        """Run another pruner, budget or pruning mode than the saved model's (evaluation of baselines)."""
        if mode is not None and mode not in PRUNING_MODES:
            raise ConfigurationError(f"pruning mode must be one of {', '.join(PRUNING_MODES)}, got {mode!r}")
        if budget is not None:
            check_budget("--budget", budget)  # refused even for ITS, which ignores it
        name = pruner or self.pruner_name
        budget = budget if budget is not None else self.pruning_budget
        self.pruner = self.model.build_pruner(name, budget)
        self.pruner_name, self.pruning_budget = name, budget
        self.pruning_mode = mode or self.pruning_mode

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, model_dir: str | Path | None = None, device: str = "auto") -> PhotonEngine:
        """Load a saved Photon folder; without one, the demo model embedded in the package."""
        device = resolve_device(device)
        folder = Path(model_dir) if model_dir is not None else EMBEDDED_MODEL_DIR
        if not (folder / "config.json").exists():
            if model_dir is None:
                raise PhotonEnvironmentError(
                    f"the demo model embedded in photonlib is missing ({folder}); reinstall photonlib, "
                    "or give a Photon model folder (--model)"
                )
            raise ConfigurationError(f"{folder}: not a Photon model folder (no config.json)")
        dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
        with quiet_loading():
            model = PhotonForConditionalGeneration.from_pretrained(folder, dtype=dtype)
        return cls(model, PhotonProcessor.from_pretrained(folder), folder.name, device)

    def info(self) -> dict:
        config: PhotonConfig = self.model.config
        grid = self.processor.preprocess.model_grid
        return {
            "name": self.name,
            "device": str(self.device),
            "model_grid_dhw": list(grid),
            "token_grid": list(config.token_grid(grid)),
            "tokens_total": self.processor.token_count(grid),
            "pruner": self.pruner_name,
            "pruning_mode": self.pruning_mode,
        }

    # ------------------------------------------------------------------ work
    @torch.no_grad()
    def prepare(self, volume: Volume) -> PreparedCase:
        """Question-independent work for one volume."""
        started = time.perf_counter()
        prepared = prepare_volume(volume, self.processor.preprocess)
        patches, grid = self.processor.volume_patches(prepared)
        preprocess_seconds = time.perf_counter() - started
        started = time.perf_counter()
        pixel_values = patches.to(self.device)
        video_grid_thw = torch.tensor([grid], device=self.device)
        with self.lock:
            embeddings = self.model.model.encode_volumes(pixel_values, video_grid_thw)
            self._synchronize()
        return PreparedCase(
            prepared=prepared,
            pixel_values=pixel_values,
            video_grid_thw=video_grid_thw,
            visual_embeddings=embeddings,
            timings={"preprocess": preprocess_seconds, "vision": time.perf_counter() - started},
        )

    @torch.no_grad()
    def ask(
        self,
        case: PreparedCase,
        question: str,
        history: Sequence[Turn] = (),
        *,
        max_new_tokens: int = 128,
        on_text: Callable[[str], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Answer:
        """Answer one question about a prepared volume (greedy decoding)."""
        started = time.perf_counter()
        grid = tuple(int(v) for v in case.video_grid_thw[0])
        prompt = self.processor.prompt_inputs(grid, question, history)  # the patches were cut in prepare()
        stream = IncrementalText(self.processor.tokenizer, on_text) if on_text is not None else None

        with self.lock:
            generation = self.model.generate(
                input_ids=prompt["input_ids"].to(self.device),
                attention_mask=prompt["attention_mask"].to(self.device),
                pixel_values=case.pixel_values,  # used only by vision-stage pruners
                video_grid_thw=case.video_grid_thw,
                visual_embeddings=None if self.pruner.stage == "vision" else case.visual_embeddings,
                max_new_tokens=max_new_tokens,
                pruner=self.pruner,
                pruning_mode=self.pruning_mode,
                on_token=stream.add if stream is not None else None,
                should_stop=should_stop,
                prefix_cache=case.prefix_cache,
            )
        if generation.keep_probability is not None:
            probability, keep = (t.float().cpu().numpy() for t in generation.token_maps(0))
            if self.pruner.stage == "language" and self.pruning_mode != "hard":
                keep = np.ones_like(keep)  # scored but not dropped: the language model used every token
        else:  # nothing was scored (e.g. a pruner that keeps everything): every token was kept
            shape = tuple(int(v) for v in self.model.token_grids(case.video_grid_thw)[0])
            probability, keep = np.ones(shape, np.float32), np.ones(shape, bool)
        timings = dict(case.timings)
        timings.update({k: v for k, v in generation.timings.items() if k != "vision" or v > 0})
        timings["total"] = timings.get("preprocess", 0.0) + timings.get("vision", 0.0) + (time.perf_counter() - started)
        return Answer(
            answer=self.processor.decode(generation.sequences)[0],
            tokens_total=case.tokens_total,
            tokens_kept=int(keep.sum()),
            keep_probability=probability.astype(np.float32),
            keep_mask=keep.astype(bool),
            timings=timings,
            stopped=generation.stopped,
            prefix_reused=generation.prefix_reused,
        )

    def heatmap(self, answer: Answer, case: PreparedCase, *, interpolation: str = "nearest") -> np.ndarray:
        """Keep probabilities on the volume's own voxel grid (KJI array, source geometry)."""
        return map_to_source(answer.keep_probability, case.prepared, interpolation=interpolation)

    def write_heatmap(self, path: str | Path, answer: Answer, case: PreparedCase, *, interpolation: str = "nearest") -> Path:
        return write_heatmap(path, answer.keep_probability, case.prepared, interpolation=interpolation)

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


class IncrementalText:
    """Streaming text, one token at a time, without decoding the whole answer again per token.

    Decodes only the tokens since the last complete piece of text: a window from ``prefix`` (a
    few tokens back, for context-dependent spacing) to the end. Text that ends in an incomplete
    UTF-8 sequence (the replacement character) is held back until the next token completes it.
    ``on_text`` receives the whole text so far, as before.
    """

    def __init__(self, tokenizer, on_text: Callable[[str], None]) -> None:
        self.tokenizer = tokenizer
        self.on_text = on_text
        self.tokens: list[int] = []
        self.text = ""
        self.prefix = 0  # window start
        self.read = 0  # tokens whose text is already in self.text

    def add(self, token: torch.Tensor) -> None:
        self.tokens.append(int(token[0]))
        decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        known = decode(self.tokens[self.prefix : self.read])
        window = decode(self.tokens[self.prefix :])
        if len(window) > len(known) and not window.endswith("\ufffd"):
            self.text += window[len(known) :]
            self.prefix, self.read = self.read, len(self.tokens)
        self.on_text(self.text)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; refuses ``cuda`` without a GPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigurationError("--device cuda was asked for, but PyTorch sees no CUDA device")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigurationError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    return device
