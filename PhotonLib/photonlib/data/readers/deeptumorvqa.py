"""DeepTumorVQA: JSON Lines, a JSON list or ``{"questions": [...]}`` (format: the package docstring)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from photonlib.answers import CHOICE_LETTERS, parse_first_number
from photonlib.data.readers.rows import (
    RowCollector,
    RowError,
    choices_from,
    closed_choice,
    csv_rows,
    jsonl_records,
    load_json,
    text_field,
)
from photonlib.data.readers.volumes import volume_folder
from photonlib.data.samples import DatasetError, DatasetReport, OnError, VQASample
from photonlib.errors import ConfigurationError

# DeepTumorVQA subtypes whose free-text answer is a number (scored with MRA).
DEEPTUMORVQA_NUMERIC_SUBTYPES = frozenset(
    {
        "organ volume measurement",
        "organ HU measurement",
        "lesion volume measurement",
        "organ HU ratio",
        "tumor burden percentage",
        "largest lesion diameter",
        "largest lesion slice",
        "lesion counting",
        "lesion count by location",
        "organ aggregation",
        "tumor organ HU difference",
    }
)


#: ``mc_question`` lists up to four options, ``A: ...`` to ``D: ...``.
MC_OPTION_LETTERS = CHOICE_LETTERS[:4]
_OPTION = re.compile(r"(?:(?<=\s)|^)\(?([" + "".join(MC_OPTION_LETTERS) + r"])\s*[:.)]\s+")


def split_mc_question(text: str) -> tuple[str, dict[str, str]]:
    """``"Which ...? A: x B: y C: z D: w"`` -> (``"Which ...?"``, {A: x, ...}).

    Options must appear in order A, B, C, ... after the stem; returns an empty dict if not.
    """
    positions: list[tuple[str, int, int]] = []
    expected = 0
    for match in _OPTION.finditer(text):
        if match.group(1) == MC_OPTION_LETTERS[expected]:
            positions.append((match.group(1), match.start(), match.end()))
            expected += 1
            if expected == len(MC_OPTION_LETTERS):
                break
    if len(positions) < 2:
        return text.strip(), {}
    stem = text[: positions[0][1]].strip()
    choices = {}
    for index, (letter, _, end) in enumerate(positions):
        stop = positions[index + 1][1] if index + 1 < len(positions) else len(text)
        choices[letter] = text[end:stop].strip().rstrip(",;").strip()
    return stem, choices


def _deeptumorvqa_records(path: Path, collector: RowCollector) -> Iterator[tuple[int, Any]]:
    if path.suffix.lower() == ".jsonl":
        yield from jsonl_records(path, collector)
        return
    if path.suffix.lower() == ".csv":
        yield from csv_rows(path, ("question", "answer"), collector)
        return
    data = load_json(path)
    if isinstance(data, dict) and isinstance(data.get("questions"), list):
        data = data["questions"]
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected JSON Lines, a JSON list of questions or an object with 'questions'")
    yield from enumerate(data, start=1)


def read_deeptumorvqa(
    path: str | Path,
    volume_root: str | Path | None = None,
    on_error: OnError = "skip",
    fmt: Literal["auto", "mc", "freeform"] = "auto",
) -> DatasetReport:
    """Read DeepTumorVQA questions (see the module docstring for the fields and ``fmt``)."""
    if fmt not in ("auto", "mc", "freeform"):
        raise ConfigurationError(f"fmt must be 'auto', 'mc' or 'freeform', got {fmt!r}")
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such DeepTumorVQA file")
    root = volume_folder(volume_root, path.parent)
    collector = RowCollector("deeptumorvqa", on_error)
    known = {
        "image_id",
        "image",
        "volume",
        "question",
        "answer",
        "mc_question",
        "options",
        "choices",
        "correct_option",
        "question_type",
        "question_subtype",
    }

    def find_volume(image: str) -> Path:
        direct = root / image
        candidates = [direct] if direct.suffix else []
        candidates += [
            root / image / "ct.nii.gz",
            root / "ct" / image / "ct.nii.gz",
            root / f"{image}.nii.gz",
            root / f"{image}.npy",
        ]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise RowError(
            f"volume for {image!r} not found under {root} (looked for <id>/ct.nii.gz, ct/<id>/ct.nii.gz, <id>.nii.gz, <id>.npy)",
            "missing volume",
        )

    def build(row: int, record: Any) -> VQASample:
        if not isinstance(record, dict):
            raise RowError(f"each question must be an object, got {type(record).__name__}", "wrong type")
        image = text_field(record.get("image_id") or record.get("image") or record.get("volume"), "image_id")
        subtype = text_field(record.get("question_subtype"), "question_subtype", required=False)
        super_type = text_field(record.get("question_type"), "question_type", required=False)
        answer = text_field(record.get("answer"), "answer")
        numeric = subtype in DEEPTUMORVQA_NUMERIC_SUBTYPES
        letter = text_field(record.get("correct_option"), "correct_option", required=False)
        multiple_choice = fmt == "mc" or (
            fmt == "auto" and not numeric and (letter is not None or record.get("mc_question"))
        )
        choices = None
        if multiple_choice:
            raw_options = record.get("options", record.get("choices"))
            stem = text_field(record.get("question"), "question", required=False)
            if raw_options is not None and not (isinstance(raw_options, str) and not raw_options.strip()):
                if isinstance(raw_options, str):
                    try:
                        raw_options = json.loads(raw_options)
                    except json.JSONDecodeError:
                        raise RowError("'options' is text but not a JSON object or list", "wrong type") from None
                choices = choices_from(raw_options, "options")
            else:
                mc_question = text_field(record.get("mc_question"), "mc_question")
                parsed_stem, choices = split_mc_question(mc_question)
                if not choices:
                    raise RowError("no options 'A: ... B: ...' found in mc_question", "bad choices")
                stem = parsed_stem or stem
            if not stem:
                raise RowError("empty 'question'", "empty field")
            question = stem
            letter = closed_choice(answer, choices, letter)
        else:
            question = text_field(record.get("question"), "question")
            if numeric and parse_first_number(answer) is None:
                raise RowError(f"subtype {subtype!r} needs a numeric answer, got {answer!r}", "wrong type")
            letter = None
        volume = find_volume(image)
        extra = {key: value for key, value in record.items() if key not in known}
        extra.update(
            {"image_id": image, "answer_type": "numeric" if numeric else ("choice" if multiple_choice else "text")}
        )
        if super_type:
            extra["question_super_type"] = super_type
        return VQASample(
            volume=volume,
            question=question,
            answer=answer,
            task=super_type,
            subtask=subtype,
            question_type="closed" if multiple_choice else "open",
            choices=choices,
            answer_choice=letter,
            source="deeptumorvqa",
            file=str(path),
            row=row,
            extra=extra,
        )

    collector.rows(path, _deeptumorvqa_records(path, collector), build)
    return collector.report
