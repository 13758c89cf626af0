"""Follow-up questions about the same volume: reusing the question-independent start of the prompt.

A Photon prompt is ``system, user: <|vision_start|> visual tokens <|vision_end|> question,
assistant:``. Everything up to ``<|vision_end|>`` (the *prefix*) is the same for every question
about a volume, and attention is causal, so in decoder layers 0..k (up to and including the ITS
layer) its keys, values and hidden states do not depend on the question: ITS has not decided
yet, every token still sees every earlier token. After layer k they do depend on it (the
question decides which visual tokens the later layers keep), so those layers run again, except
for the text before the volume (the system prompt and the turn's start): it attends only to
itself and is always kept, so its keys and values are the same in every layer.

:class:`PromptPrefix` holds that state: the keys and values of layers 0..k and the hidden states
leaving layer k, for the prefix's tokens, and the later layers' keys and values of the text before
the volume. A second question then runs only its own tokens through layers 0..k, attending to the
saved keys and values, the later layers skip the leading text, and the result is exactly that of
a prompt computed from scratch (``Testing/photonlib_tests/model/test_prompt_prefix.py`` checks answers and kept tokens
are the same, token for token).

:class:`PrefixCache` keeps at most one prefix (the latest), so its memory is bounded by one
prefix per holder; the engine gives every prepared volume one, and the server counts it in the
volume's memory (``--cache-mb``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class PromptPrefix:
    """Decoder layers 0..k's state for the first ``length`` tokens of a prompt (batch of one)."""

    input_ids: torch.Tensor  # (P,) the prefix's token ids: a later prompt must start with exactly these
    layers: list[tuple[torch.Tensor, torch.Tensor]]  # layers 0..k: keys, values (1, kv_heads, P, head_dim)
    hidden: torch.Tensor  # (1, P, D) hidden states leaving layer k
    # Layers k+1..L-1: keys, values (1, kv_heads, S, head_dim) of the S tokens before the volume
    # (system prompt, the turn's start): they attend only to themselves and are always kept.
    leading_layers: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)

    @property
    def leading(self) -> int:
        """Tokens before the volume that the later layers take from here."""
        return int(self.leading_layers[0][0].shape[-2]) if self.leading_layers else 0

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[0])

    def nbytes(self) -> int:
        layers = [*self.layers, *self.leading_layers]
        tensors = [self.input_ids, self.hidden, *(part for layer in layers for part in layer)]
        return int(sum(t.element_size() * t.nelement() for t in tensors))

    def matches(self, input_ids: torch.Tensor) -> bool:
        """Whether a (1, L) prompt starts with this prefix (and has tokens after it)."""
        length = self.length
        row = input_ids[0]
        return row.shape[0] > length and row.device == self.input_ids.device and torch.equal(row[:length], self.input_ids)


class PrefixCache:
    """At most one :class:`PromptPrefix`, the latest one recorded."""

    def __init__(self) -> None:
        self.prefix: PromptPrefix | None = None
        self.hits = 0

    def lookup(self, input_ids: torch.Tensor) -> PromptPrefix | None:
        prefix = self.prefix
        if prefix is not None and prefix.matches(input_ids):
            self.hits += 1
            return prefix
        return None

    def store(self, prefix: PromptPrefix) -> None:
        self.prefix = prefix

    def clear(self) -> None:
        self.prefix = None

    def nbytes(self) -> int:
        return self.prefix.nbytes() if self.prefix is not None else 0


def prefix_length(input_ids: torch.Tensor, vision_end_token_id: int) -> int | None:
    """Tokens up to and including the last ``<|vision_end|>`` of a (1, L) prompt, or None without one."""
    ends = torch.nonzero(input_ids[0] == vision_end_token_id)
    return int(ends[-1]) + 1 if ends.numel() else None
