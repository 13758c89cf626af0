"""Tokenizers: the real Qwen one, or a compact byte-level BPE for small demo models.

A model trained from scratch on a narrow corpus (the phantom demo) does not need Qwen's
151,936-entry vocabulary: its embedding alone would be most of the model. A compact byte-level
BPE trained on the corpus keeps every Qwen special token Photon relies on, still encodes any
text (unknown words fall back to bytes) and makes the shipped model a few megabytes.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from photonlib.errors import ConfigurationError
from photonlib.model.tokens import END_OF_TEXT, IM_END, IMAGE_PAD, SPECIAL_TOKENS, VIDEO_PAD, VISION_END, VISION_START

CHAT_WORDS = ("system", "user", "assistant", "You are a helpful assistant.")


def train_compact_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A deterministic byte-level BPE over ``texts`` (plus the chat template's own words)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = list(CHAT_WORDS) + sorted(set(texts))  # sorted: the same corpus gives the same merges
    tokenizer.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=None,
        eos_token=IM_END,
        pad_token=END_OF_TEXT,
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in (END_OF_TEXT, IM_END)],
    )


def token_id_settings(tokenizer) -> dict:
    """PhotonConfig fields that must agree with ``tokenizer`` (ids and vocabulary size)."""
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    missing = [token for token, index in ids.items() if index is None or index == tokenizer.unk_token_id]
    if missing:
        raise ConfigurationError(f"the tokenizer lacks Photon's special tokens {missing}")
    return {
        "video_token_id": ids[VIDEO_PAD],
        "image_token_id": ids[IMAGE_PAD],
        "vision_start_token_id": ids[VISION_START],
        "vision_end_token_id": ids[VISION_END],
        "im_end_token_id": ids[IM_END],
        "text": {
            "vocab_size": len(tokenizer),
            "eos_token_id": ids[IM_END],
            "pad_token_id": ids[END_OF_TEXT],
            "bos_token_id": ids[END_OF_TEXT],
        },
    }
