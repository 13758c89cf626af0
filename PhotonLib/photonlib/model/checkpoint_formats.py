"""What ``photon convert`` accepts, defined once for the command line (which must not import
PyTorch to build its help) and :mod:`photonlib.model.conversion` (which checks the values)."""

from __future__ import annotations

#: Checkpoint kinds: the authors' released Photon-S1/S2, or a Qwen2.5-VL to start from.
SOURCE_FORMATS: tuple[str, ...] = ("released", "qwen2.5-vl")
#: Qwen2.5-VL only: the new one-channel 3D patch embedding from a truncated normal, as the
#: authors started stage 1, or derived from Qwen's 2D kernel (see :mod:`.conversion`).
PATCH_INITS: tuple[str, ...] = ("released", "from_2d")
#: Weight dtypes a converted model may be written in (``auto``: the checkpoint's own).
WEIGHT_DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")
