"""What every dataset reader shares: one row's error, the report it goes to, and field checks.

A reader turns each raw row (a CSV line, a JSON object) into a
:class:`~photonlib.data.samples.VQASample` with a ``build`` function; a :class:`RowError` raised
there becomes a :class:`~photonlib.data.samples.RowProblem` in the report (or, with
``on_error="raise"``, a :class:`~photonlib.data.samples.DatasetError`). The answer vocabulary
(choice letters, matching an answer to its choice) is :mod:`photonlib.answers`, shared with the
scorers, so a reader never accepts as "choice B" what evaluation would score as another letter.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from photonlib.answers import CHOICE_LETTERS, answer_matches_choice, normalize_letter
from photonlib.data.samples import DatasetError, DatasetReport, OnError, RowProblem, VQASample
from photonlib.errors import ConfigurationError

#: The benchmark CSVs (3D-RAD, M3D-VQA) have four choice columns, ``Choice A`` .. ``Choice D``.
CSV_CHOICE_LETTERS = CHOICE_LETTERS[:4]

_ABSENT = {"", "-", "nan", "none", "null"}


class RowError(Exception):
    """Internal: one row is unusable (caught and turned into a RowProblem)."""

    def __init__(self, reason: str, category: str = "malformed row") -> None:
        super().__init__(reason)
        self.reason = reason
        self.category = category


class RowCollector:
    """Builds a DatasetReport, raising on the first problem when asked to."""

    def __init__(self, source: str, on_error: OnError) -> None:
        if on_error not in ("skip", "raise"):
            raise ConfigurationError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.on_error = on_error
        self.report = DatasetReport(source=source)

    def problem(self, file: Path | str, row: int, reason: str, category: str = "malformed row") -> None:
        problem = RowProblem(str(file), row, reason, category)
        if self.on_error == "raise":
            raise DatasetError(str(problem), problem)
        self.report.problems.append(problem)

    def rows(self, file: Path, rows: Iterable[tuple[int, Any]], build: Callable[[int, Any], VQASample | None]) -> None:
        """Run ``build`` on every (row number, raw row); a RowError becomes a problem."""
        self.report.files.append(str(file))
        for row_number, raw in rows:
            self.report.rows_read += 1
            try:
                sample = build(row_number, raw)
            except RowError as error:
                self.problem(file, row_number, error.reason, error.category)
                continue
            if sample is not None:
                self.report.samples.append(sample)


def text_field(value: Any, name: str, *, required: bool = True) -> str | None:
    """A string field: strings are stripped, numbers turned into text, anything else refused."""
    if value is None:
        if required:
            raise RowError(f"no {name!r}", "missing field")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise RowError(f"{name!r} must be text, got {type(value).__name__}", "wrong type")
    text = str(value).strip()
    if not text and required:
        raise RowError(f"empty {name!r}", "empty field")
    return text or None


def closed_choice(answer: str, choices: dict[str, str], letter: str | None) -> str:
    """Check a closed question's choices and answer; return the answer letter."""
    if len(choices) < 2:
        raise RowError(f"a closed question needs at least 2 choices, got {len(choices)}", "bad choices")
    if letter is None:
        matching = [key for key, text in choices.items() if answer_matches_choice(answer, key, text)]
        if len(matching) != 1:
            raise RowError(
                f"no answer letter given and the answer {answer!r} is not exactly one of the choices {sorted(choices)}",
                "bad choices",
            )
        return matching[0]
    letter = normalize_letter(letter)
    if letter not in choices:
        raise RowError(f"answer letter {letter!r} is not among the choices {sorted(choices)}", "bad choices")
    if not answer_matches_choice(answer, letter, choices[letter]):
        raise RowError(f"the answer {answer!r} is not the text of choice {letter} ({choices[letter]!r})", "bad choices")
    return letter


def choices_from(value: Any, name: str = "choices") -> dict[str, str] | None:
    """``{"A": "Yes", ...}`` or ``["Yes", ...]`` -> letter -> text (None when absent)."""
    if value is None:
        return None
    if isinstance(value, list):
        if len(value) > len(CHOICE_LETTERS):
            raise RowError(f"at most {len(CHOICE_LETTERS)} choices are supported, got {len(value)}", "bad choices")
        value = dict(zip(CHOICE_LETTERS, value))
    if not isinstance(value, dict):
        raise RowError(
            f"{name!r} must be an object (letter -> text) or a list, got {type(value).__name__}", "wrong type"
        )
    choices: dict[str, str] = {}
    for key, text in value.items():
        letter = str(key).strip().upper()
        if letter not in CHOICE_LETTERS:
            raise RowError(
                f"choice key {key!r} is not a letter {CHOICE_LETTERS[0]}-{CHOICE_LETTERS[-1]}", "bad choices"
            )
        if not isinstance(text, str) or not text.strip():
            raise RowError(f"choice {letter} must be non-empty text, got {text!r}", "bad choices")
        choices[letter] = text.strip()
    return dict(sorted(choices.items()))


def csv_rows(path: Path, required: tuple[str, ...], collector: RowCollector) -> Iterator[tuple[int, dict[str, str]]]:
    """(start line, row dict) of a CSV with a header; rows of the wrong width are problems."""
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as error:
        raise DatasetError(f"{path}: cannot open ({error.strerror or error})") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = [name.strip() for name in next(reader)]
        except StopIteration:
            collector.problem(path, 1, "empty file: no header row", "missing column")
            return
        except (csv.Error, UnicodeDecodeError) as error:
            collector.problem(path, 1, f"unreadable CSV header ({error})", "malformed row")
            return
        missing = [name for name in required if name not in header]
        if missing:
            collector.problem(
                path, 1, f"missing column(s) {', '.join(missing)}; the header has {', '.join(header)}", "missing column"
            )
            return
        line = reader.line_num
        while True:
            start = line + 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as error:
                collector.report.rows_read += 1
                collector.problem(path, start, f"unreadable CSV row ({error})", "malformed row")
                return
            line = reader.line_num
            if not fields or all(not field.strip() for field in fields):
                continue
            if len(fields) != len(header):
                collector.report.rows_read += 1
                collector.problem(
                    path, start, f"row has {len(fields)} fields; the header has {len(header)}", "missing column"
                )
                continue
            yield start, dict(zip(header, fields))


def is_present(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in _ABSENT


def load_json(path: Path) -> Any:
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: not valid JSON ({error})") from None


def jsonl_records(path: Path, collector: RowCollector) -> Iterator[tuple[int, Any]]:
    """(line number, decoded object) per non-blank line; undecodable lines are problems."""
    try:
        handle = open(path, encoding="utf-8-sig")
    except OSError as error:
        raise DatasetError(f"{path}: cannot open ({error.strerror or error})") from None
    with handle:
        line_number = 0
        while True:
            try:
                line = handle.readline()
            except UnicodeDecodeError as error:
                collector.report.rows_read += 1
                collector.problem(path, line_number + 1, f"not UTF-8 text ({error})", "bad json")
                return
            if not line:
                return
            line_number += 1
            if not line.strip():
                continue
            try:
                yield line_number, json.loads(line)
            except json.JSONDecodeError as error:
                collector.report.rows_read += 1
                collector.problem(path, line_number, f"not valid JSON: {error.msg} (column {error.colno})", "bad json")
