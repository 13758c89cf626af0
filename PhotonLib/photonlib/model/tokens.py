"""The vocabulary's special tokens and the visual token grid, defined once.

Special tokens are Qwen2.5-VL's chat and vision markers (the compact demo tokenizer carries the
same strings). The grid arithmetic: a (D, H, W) model-grid volume is cut into patches of
``patch_size_dhw`` voxels, giving the patch grid (t, h, w) the vision tower sees; its 2 x 2
spatial merger turns that into the language model's token grid (t, h / 2, w / 2).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
END_OF_TEXT = "<|endoftext|>"
#: Qwen2.5-VL's special tokens that the Photon prompt uses, in Qwen's order (a compact tokenizer
#: is trained with them in this order, so their ids stay 0..6).
SPECIAL_TOKENS = (END_OF_TEXT, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)

#: Label value of a token that is not scored (prompt, padding): PyTorch's cross-entropy default.
IGNORE_INDEX = -100


def patch_grid(volume_shape_dhw: Sequence[int], patch_size_dhw: Sequence[int], merge: int) -> tuple[int, int, int]:
    """Patch grid (t, h, w) of a model-grid volume; refuses shapes that do not tile."""
    grid = tuple(int(n) // int(p) for n, p in zip(volume_shape_dhw, patch_size_dhw))
    if any(int(n) % int(p) for n, p in zip(volume_shape_dhw, patch_size_dhw)) or grid[1] % merge or grid[2] % merge:
        patch = tuple(int(p) for p in patch_size_dhw)
        raise ValueError(
            f"volume shape {tuple(volume_shape_dhw)} does not tile into patches of {patch} voxels with a "
            f"{merge} x {merge} merge; use multiples of {(patch[0], patch[1] * merge, patch[2] * merge)}"
        )
    return grid


def merged_grid(patches: Sequence[int], merge: int) -> tuple[int, int, int]:
    """The language model's token grid (t, h, w) of a patch grid, after the spatial merge."""
    t, h, w = (int(n) for n in patches)
    return (t, h // merge, w // merge)


def merged_grids(video_grid_thw: torch.Tensor, merge: int) -> torch.Tensor:
    """(N, 3) token grids of the volumes of a batch, from their (N, 3) patch grids."""
    grids = video_grid_thw.clone()
    grids[:, 1:] //= merge
    return grids


def instruction_mask_from_ids(input_ids: torch.Tensor, vision_end_id: int, im_end_id: int) -> torch.Tensor:
    """True on the instruction: tokens after the last ``<|vision_end|>`` up to the next ``<|im_end|>``."""
    batch, length = input_ids.shape
    positions = torch.arange(length, device=input_ids.device).expand(batch, length)
    is_end = input_ids == vision_end_id
    last_end = torch.where(is_end, positions, torch.full_like(positions, -1)).amax(dim=1, keepdim=True)
    after = (positions > last_end) & (last_end >= 0)
    closing = (input_ids == im_end_id) & after
    first_close = torch.where(closing, positions, torch.full_like(positions, length)).amin(dim=1, keepdim=True)
    return after & (positions < first_close)
