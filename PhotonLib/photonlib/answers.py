"""The answer vocabulary shared by the dataset readers and the scorers: choice letters, text
normalisation and number parsing.

One place decides what a choice letter is, when an answer names a choice, how whitespace and
case are folded and how a number is read from free text, so that a reader that accepts a row
and a scorer that grades the answer to it cannot disagree. Pure Python (``re`` only): importing
it loads neither torch nor NumPy.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

#: Choice letters, in order; a closed question has at most this many choices.
CHOICE_LETTERS: tuple[str, ...] = ("A", "B", "C", "D", "E", "F")

_WHITESPACE = re.compile(r"\s+")


def normalize_whitespace(text: str) -> str:
    """Runs of whitespace made one space, ends stripped (the Photon release's ``norm_space``)."""
    return _WHITESPACE.sub(" ", str(text)).strip()


def choice_key(text: str) -> str:
    """The form in which an answer and a choice are compared: whitespace collapsed, surrounding
    quotes and trailing ``.;:`` removed, case folded. ``"'Pleural effusion.'"`` ->
    ``"pleural effusion"``; inner punctuation is kept (``"No Abnormality (Always absent)"``)."""
    text = normalize_whitespace(text).strip("\"'").strip()
    return text.rstrip(".;: ").casefold()


def normalize_letter(letter: str | None) -> str | None:
    """``" b. "`` -> ``"B"``; ``None`` or blank -> ``None``. The letter is not checked against
    :data:`CHOICE_LETTERS` (readers do that, with their own error)."""
    if letter is None:
        return None
    return letter.strip().rstrip(".").strip().upper() or None


def answer_matches_choice(answer: str, letter: str, text: str) -> bool:
    """True when ``answer`` is the choice's text, its letter, or ``"<letter>. <text>"``
    (compared by :func:`choice_key`)."""
    candidates = {choice_key(text), choice_key(letter), choice_key(f"{letter}. {text}")}
    return choice_key(answer) in candidates


def answer_letter_for(answer: str, choices: Sequence[str] | Mapping[str, str]) -> str | None:
    """The letter of the only choice that ``answer`` names (:func:`answer_matches_choice`), or
    None when none or several do. ``choices``: texts in letter order or ``{"A": text, ...}``."""
    lettered = choices.items() if isinstance(choices, Mapping) else zip(CHOICE_LETTERS, choices)
    matching = [
        str(letter).strip().upper()
        for letter, text in lettered
        if answer_matches_choice(answer, str(letter).strip().upper(), str(text))
    ]
    return matching[0] if len(matching) == 1 else None


# A number: sign, digits with optional thousands commas ("1,200"), decimals, exponent.
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+(?:[eE][-+]?\d+)?")
# The Photon release's free-text scorer (evaluation/free-text-evaluation.py, ``_num_pattern``):
# no thousands commas ("1,200" reads 1), "12." allowed.
_NUMBER_PHOTON = re.compile(r"[+-]?(?:(?:\d+\.\d*)|(?:\.\d+)|(?:\d+))(?:[eE][+-]?\d+)?")


def parse_first_number(text: str, *, thousands: bool = True) -> float | None:
    """The first number in the text (``"about 3.5 cm"`` -> 3.5, ``"1,200 ml"`` -> 1200), or None.

    ``thousands=False`` reads it as the Photon release's scorer does: commas end a number
    (``"1,200"`` -> 1).
    """
    match = (_NUMBER if thousands else _NUMBER_PHOTON).search(str(text))
    if match is None:
        return None
    value = float(match.group(0).replace(",", ""))
    return value if math.isfinite(value) else None
