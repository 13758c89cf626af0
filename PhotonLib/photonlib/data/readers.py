"""Readers for the benchmark formats (docs/method.md section 6) and a plain JSON Lines format.

Every reader returns a :class:`~photonlib.data.samples.DatasetReport` of
:class:`~photonlib.data.samples.VQASample`. Volumes are found on disk (existence checked, never
loaded: reading happens in training and evaluation). A row that cannot be used (missing
column, empty question or answer, a closed question without choices or whose answer letter is
not among them, a line that is not JSON, a field of the wrong type, a volume that is not there)
is reported as a :class:`~photonlib.data.samples.RowProblem` and counted; with
``on_error="raise"`` the first one raises :class:`~photonlib.data.samples.DatasetError`.

Formats, as read here:

3D-RAD
    One CSV per subtask, in ``Task<N>_<name>/`` folders; columns ``Task, Subtask, VolumeName,
    Question, Answer, QuestionType, AnswerChoice, Choice A, Choice B, Choice C, Choice D``.
    ``QuestionType`` is ``Open`` or ``Close``; unused choices and the open questions'
    ``AnswerChoice`` are ``-``. The answer of a closed question is the text of its choice.
    ``VolumeName`` is a CT-RATE name such as ``test_1016_d_2.nii.gz``; the volume is looked for
    in ``volume_root`` as that name, then ``<stem>.npy``, ``<stem>.nii.gz``, ``<stem>.nii``, and
    finally as any file of that stem (volume suffixes) anywhere below ``volume_root``.
    ``task`` is the task name (``Image Observation``...), ``subtask`` the CSV's file stem.

M3D-VQA
    CSV with ``Image Path, Question, Choice A..D, Answer Choice, Answer`` (optional
    ``Question Type``, 1..5 = Plane, Phase, Organ, Abnormality, Location, in the M3D paper's
    order). ``Image Path`` is relative to ``volume_root`` (default: the CSV's folder). Rows are
    read as closed questions (``question_type="closed"``) or open ones (``"open"``).

M3D-Cap
    JSON: a list of ``{"image": path, "text": path-or-caption}``, or an object of such lists
    by split (``{"train": [...], "validation": [...], "test": [...]}``, then ``split`` must be
    chosen when there are several). ``text`` ending in ``.txt`` is a caption file relative to
    ``volume_root``; anything else is the caption itself. The question is
    :data:`CAPTION_QUESTION`, the answer the caption.

DeepTumorVQA
    JSON Lines (``test_qa.jsonl``), a JSON list, or the ``{"questions": [...]}`` form of
    ``test_qa.json``. Accepted fields: ``image_id`` (or ``image``/``volume``), ``question``,
    ``answer``, ``mc_question`` (the question with its options ``A: ... B: ...``) or
    ``options``/``choices`` (object or list), ``correct_option``, ``question_type`` (super
    type: recognition, measurement, visual reasoning, medical reasoning), ``question_subtype``,
    ``qid``; other fields go to ``extra``. ``fmt="auto"`` reads the numeric subtypes
    (:data:`DEEPTUMORVQA_NUMERIC_SUBTYPES`, scored by MRA) as open questions whose answer must
    hold a number, and everything else as multiple choice; ``"mc"`` and ``"freeform"`` force
    one form. Volumes: ``<root>/<image_id>/ct.nii.gz``, ``<root>/ct/<image_id>/ct.nii.gz``,
    ``<root>/<image_id>.nii.gz`` or ``<root>/<image_id>.npy``.

Plain JSON Lines (users' own data, and the phantom generator's output)
    One object per line: ``volume`` (relative paths resolve against ``volume_root`` or else
    the JSONL file's folder), ``question``, ``answer`` (a string; numbers are accepted and
    written as text), optional ``task``, ``subtask``, ``choices`` (``{"A": "Yes", ...}`` or a
    list, lettered A, B, ...), ``answer_choice`` (a letter; when missing it is found from the
    answer text), ``question_type`` (``open``/``closed``; closed when choices are given, an
    explicit ``open`` ignores them) and ``extra`` (an object). Unknown keys are kept in
    ``extra``. Blank lines are skipped.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from photonlib.answers import CHOICE_LETTERS, answer_matches_choice, normalize_letter, parse_first_number
from photonlib.data.samples import DatasetError, DatasetReport, OnError, RowProblem, VQASample
from photonlib.errors import ConfigurationError
from photonlib.volume.formats import VOLUME_FILE_SUFFIXES

#: The instruction a caption pair is asked with (M3D-Cap).
CAPTION_QUESTION = "Describe the findings of this CT scan."

VOLUME_SUFFIXES = VOLUME_FILE_SUFFIXES  # what a case's volume file may end with

RAD_COLUMNS = ("Task", "Subtask", "VolumeName", "Question", "Answer", "QuestionType", "AnswerChoice")
RAD_TASKS = {
    1: "Image Observation",
    2: "Anomaly Detection",
    3: "Medical Computation",
    4: "Existence Detection",
    5: "Static Temporal Diagnosis",
    6: "Longitudinal Temporal Diagnosis",
}
M3D_VQA_TYPES = {1: "Plane", 2: "Phase", 3: "Organ", 4: "Abnormality", 5: "Location"}

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

_ABSENT = {"", "-", "nan", "none", "null"}


class _RowError(Exception):
    """Internal: one row is unusable (caught and turned into a RowProblem)."""

    def __init__(self, reason: str, category: str = "malformed row") -> None:
        super().__init__(reason)
        self.reason = reason
        self.category = category


class _Collector:
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
        """Run ``build`` on every (row number, raw row); a _RowError becomes a problem."""
        self.report.files.append(str(file))
        for row_number, raw in rows:
            self.report.rows_read += 1
            try:
                sample = build(row_number, raw)
            except _RowError as error:
                self.problem(file, row_number, error.reason, error.category)
                continue
            if sample is not None:
                self.report.samples.append(sample)


# ----------------------------------------------------------------------------- small helpers
def volume_stem(name: str) -> str:
    """``test_1_a_1.nii.gz`` -> ``test_1_a_1`` (any volume suffix, case-insensitive)."""
    lower = name.lower()
    for suffix in VOLUME_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _text(value: Any, name: str, *, required: bool = True) -> str | None:
    """A string field: strings are stripped, numbers turned into text, anything else refused."""
    if value is None:
        if required:
            raise _RowError(f"no {name!r}", "missing field")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _RowError(f"{name!r} must be text, got {type(value).__name__}", "wrong type")
    text = str(value).strip()
    if not text and required:
        raise _RowError(f"empty {name!r}", "empty field")
    return text or None


def _closed_choice(answer: str, choices: dict[str, str], letter: str | None) -> str:
    """Check a closed question's choices and answer; return the answer letter."""
    if len(choices) < 2:
        raise _RowError(f"a closed question needs at least 2 choices, got {len(choices)}", "bad choices")
    if letter is None:
        matching = [key for key, text in choices.items() if answer_matches_choice(answer, key, text)]
        if len(matching) != 1:
            raise _RowError(
                f"no answer letter given and the answer {answer!r} is not exactly one of the choices {sorted(choices)}",
                "bad choices",
            )
        return matching[0]
    letter = normalize_letter(letter)
    if letter not in choices:
        raise _RowError(f"answer letter {letter!r} is not among the choices {sorted(choices)}", "bad choices")
    if not answer_matches_choice(answer, letter, choices[letter]):
        raise _RowError(
            f"the answer {answer!r} is not the text of choice {letter} ({choices[letter]!r})", "bad choices"
        )
    return letter


def _choices_from(value: Any, name: str = "choices") -> dict[str, str] | None:
    """``{"A": "Yes", ...}`` or ``["Yes", ...]`` -> letter -> text (None when absent)."""
    if value is None:
        return None
    if isinstance(value, list):
        if len(value) > len(CHOICE_LETTERS):
            raise _RowError(f"at most {len(CHOICE_LETTERS)} choices are supported, got {len(value)}", "bad choices")
        value = dict(zip(CHOICE_LETTERS, value))
    if not isinstance(value, dict):
        raise _RowError(
            f"{name!r} must be an object (letter -> text) or a list, got {type(value).__name__}", "wrong type"
        )
    choices: dict[str, str] = {}
    for key, text in value.items():
        letter = str(key).strip().upper()
        if letter not in CHOICE_LETTERS:
            raise _RowError(
                f"choice key {key!r} is not a letter {CHOICE_LETTERS[0]}-{CHOICE_LETTERS[-1]}", "bad choices"
            )
        if not isinstance(text, str) or not text.strip():
            raise _RowError(f"choice {letter} must be non-empty text, got {text!r}", "bad choices")
        choices[letter] = text.strip()
    return dict(sorted(choices.items()))


def _volume_root(volume_root: str | Path | None, default: Path) -> Path:
    """The folder volumes are looked up in; a given one must exist (one clear error instead of
    one missing-volume problem per row)."""
    if volume_root is None:
        return default
    root = Path(volume_root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"volume root {root} is not a folder")
    return root


def _check_exists(path: Path) -> Path:
    if not path.exists():
        raise _RowError(f"volume {str(path)!r} does not exist", "missing volume")
    return path


class VolumeResolver:
    """Finds a benchmark volume by name under a root folder (results cached per name).

    Tries ``<root>/<name>``, then ``<stem>`` with each of ``suffixes``, then any file of that
    stem with a volume suffix anywhere below the root (the folder is indexed once, on the
    first miss, so nested layouts such as CT-RATE's ``valid_1/valid_1_a/valid_1_a_1.nii.gz``
    work too).
    """

    def __init__(self, root: Path, suffixes: tuple[str, ...] = (".npy", ".nii.gz", ".nii")) -> None:
        self.root = Path(root)
        self.suffixes = suffixes
        self._cache: dict[str, Path | None] = {}
        self._index: dict[str, Path] | None = None

    def resolve(self, name: str) -> Path | None:
        if name not in self._cache:
            self._cache[name] = self._find(name)
        return self._cache[name]

    def _candidates(self, name: str) -> list[str]:
        stem = volume_stem(name)
        return list(dict.fromkeys([name] + [f"{stem}{suffix}" for suffix in self.suffixes]))

    def _find(self, name: str) -> Path | None:
        stem = volume_stem(name)
        for candidate in self._candidates(name):
            if (self.root / candidate).is_file():
                return self.root / candidate
        if self._index is None:
            self._index = {}
            if self.root.is_dir():
                for path in sorted(self.root.rglob("*")):
                    if path.is_file() and path.name.lower().endswith(VOLUME_SUFFIXES):
                        self._index.setdefault(volume_stem(path.name), path)
        return self._index.get(Path(stem).name)

    def missing_reason(self, name: str) -> str:
        tried = ", ".join(self._candidates(name))
        return f"volume {name!r} not found under {self.root} (looked for {tried} and any {volume_stem(name)}.* below)"


def _csv_rows(path: Path, required: tuple[str, ...], collector: _Collector) -> Iterator[tuple[int, dict[str, str]]]:
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


def _present(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in _ABSENT


# ----------------------------------------------------------------------------- 3D-RAD
def _rad_csv_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DatasetError(f"{path}: no such 3D-RAD CSV file or folder")
    files = sorted(
        p for p in path.rglob("*.csv") if any(part.startswith("Task") for part in p.relative_to(path).parts[:-1])
    )
    if not files:
        raise DatasetError(f"{path}: no 3D-RAD CSV files (expected Task<N>_<name>/<subtask>.csv below this folder)")
    return files


def read_3d_rad(
    csv_or_folder: str | Path, volume_root: str | Path | None = None, on_error: OnError = "skip"
) -> DatasetReport:
    """Read 3D-RAD questions from one task CSV or every ``Task*/`` CSV below a folder.

    Args:
        csv_or_folder: a CSV file, or a folder holding ``Task<N>_<name>/*.csv``.
        volume_root: folder of the volumes (``.npy`` or ``.nii.gz``); default the CSV's folder.
        on_error: ``"skip"`` reports and counts unusable rows; ``"raise"`` raises on the first.
    """
    path = Path(csv_or_folder)
    files = _rad_csv_files(path)
    root = _volume_root(volume_root, path if path.is_dir() else path.parent)
    resolver = VolumeResolver(root)
    collector = _Collector("3d-rad", on_error)
    for file in files:

        def build(row: int, fields: dict[str, str], file: Path = file) -> VQASample:
            try:
                task_id, subtask_id = int(fields["Task"]), int(fields["Subtask"])
            except ValueError:
                raise _RowError(
                    f"Task and Subtask must be numbers, got {fields['Task']!r} and {fields['Subtask']!r}", "wrong type"
                ) from None
            name = _text(fields["VolumeName"], "VolumeName")
            question = _text(fields["Question"], "Question")
            answer = _text(fields["Answer"], "Answer")
            kind = fields["QuestionType"].strip().lower()
            if kind not in ("open", "close", "closed"):
                raise _RowError(f"QuestionType must be Open or Close, got {fields['QuestionType']!r}", "wrong type")
            choices = letter = None
            if kind != "open":
                choices = {
                    letter: fields[f"Choice {letter}"].strip()
                    for letter in "ABCD"
                    if _present(fields.get(f"Choice {letter}"))
                }
                if not _present(fields["AnswerChoice"]):
                    raise _RowError("a closed question without an AnswerChoice letter", "bad choices")
                letter = _closed_choice(answer, choices, fields["AnswerChoice"])
            volume = resolver.resolve(name)
            if volume is None:
                raise _RowError(resolver.missing_reason(name), "missing volume")
            return VQASample(
                volume=volume,
                question=question,
                answer=answer,
                task=RAD_TASKS.get(task_id, f"Task {task_id}"),
                subtask=file.stem,
                question_type="open" if kind == "open" else "closed",
                choices=choices,
                answer_choice=letter,
                source="3d-rad",
                file=str(file),
                row=row,
                extra={"task_id": task_id, "subtask_id": subtask_id, "volume_name": name},
            )

        collector.rows(file, _csv_rows(file, RAD_COLUMNS, collector), build)
    return collector.report


# ----------------------------------------------------------------------------- M3D
def read_m3d_vqa(
    csv_path: str | Path,
    volume_root: str | Path | None = None,
    on_error: OnError = "skip",
    question_type: Literal["closed", "open"] = "closed",
) -> DatasetReport:
    """Read an M3D-VQA CSV (``Image Path, Question, Choice A..D, Answer Choice, Answer``).

    ``question_type="closed"`` keeps the four choices and the answer letter (the benchmark's
    closed-ended protocol); ``"open"`` asks the question alone (its open-ended protocol).
    """
    if question_type not in ("closed", "open"):
        raise ConfigurationError(f"question_type must be 'closed' or 'open', got {question_type!r}")
    path = Path(csv_path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such M3D-VQA CSV file")
    root = _volume_root(volume_root, path.parent)
    required = ("Image Path", "Question", "Answer") + (
        ("Choice A", "Choice B", "Choice C", "Choice D", "Answer Choice") if question_type == "closed" else ()
    )
    collector = _Collector("m3d-vqa", on_error)

    def build(row: int, fields: dict[str, str]) -> VQASample:
        image = _text(fields["Image Path"], "Image Path")
        question = _text(fields["Question"], "Question")
        answer = _text(fields["Answer"], "Answer")
        choices = letter = None
        if question_type == "closed":
            choices = {
                letter: fields[f"Choice {letter}"].strip() for letter in "ABCD" if _present(fields[f"Choice {letter}"])
            }
            if not _present(fields["Answer Choice"]):
                raise _RowError("no Answer Choice letter", "bad choices")
            letter = _closed_choice(answer, choices, fields["Answer Choice"])
        raw_type = (fields.get("Question Type") or "").strip()
        task = M3D_VQA_TYPES.get(int(raw_type), raw_type) if raw_type.isdigit() else (raw_type or None)
        volume = _check_exists(root / image)
        return VQASample(
            volume=volume,
            question=question,
            answer=answer,
            task=task,
            question_type=question_type,
            choices=choices,
            answer_choice=letter,
            source="m3d-vqa",
            file=str(path),
            row=row,
            extra={"image_path": image, "question_type_id": raw_type or None},
        )

    collector.rows(path, _csv_rows(path, required, collector), build)
    return collector.report


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: not valid JSON ({error})") from None


def read_m3d_cap(
    json_path: str | Path, volume_root: str | Path | None = None, on_error: OnError = "skip", split: str | None = None
) -> DatasetReport:
    """Read M3D-Cap image-caption pairs as questions (:data:`CAPTION_QUESTION`) with the caption
    as answer. ``split`` picks one list when the JSON holds several (``train``, ``test``...)."""
    path = Path(json_path)
    data = _load_json(path)
    if isinstance(data, dict):
        splits = {key: value for key, value in data.items() if isinstance(value, list)}
        if split is None and len(splits) == 1:
            split = next(iter(splits))
        if split is None:
            raise DatasetError(f"{path}: holds the splits {', '.join(splits)}; choose one (split=...)")
        if split not in splits:
            raise DatasetError(f"{path}: no split {split!r}; it holds {', '.join(splits) or 'no lists'}")
        items = splits[split]
    elif isinstance(data, list):
        if split is not None:
            raise DatasetError(f"{path}: a plain list has no splits, but split={split!r} was asked for")
        items = data
    else:
        raise DatasetError(f"{path}: expected a JSON list of {{image, text}} or an object of such lists by split")
    root = _volume_root(volume_root, path.parent)
    collector = _Collector("m3d-cap", on_error)

    def build(row: int, item: Any) -> VQASample:
        if not isinstance(item, dict):
            raise _RowError(f"item must be an object with image and text, got {type(item).__name__}", "wrong type")
        image = _text(item.get("image"), "image")
        text = _text(item.get("text"), "text")
        caption_file = None
        if text.lower().endswith(".txt") and "\n" not in text:
            caption_file = root / text
            try:
                text = caption_file.read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                raise _RowError(f"caption file {str(caption_file)!r} does not exist", "missing caption") from None
            except (OSError, UnicodeDecodeError) as error:
                raise _RowError(f"caption file {str(caption_file)!r} unreadable ({error})", "missing caption") from None
            if not text:
                raise _RowError(f"caption file {str(caption_file)!r} is empty", "empty field")
        volume = _check_exists(root / image)
        extra = {"image_path": image, "split": split}
        if caption_file is not None:
            extra["caption_file"] = str(caption_file)
        return VQASample(
            volume, CAPTION_QUESTION, text, task="Caption", source="m3d-cap", file=str(path), row=row, extra=extra
        )

    collector.rows(path, enumerate(items, start=1), build)
    return collector.report


# ----------------------------------------------------------------------------- JSON Lines
def _jsonl_records(path: Path, collector: _Collector) -> Iterator[tuple[int, Any]]:
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


_JSONL_KEYS = {"volume", "question", "answer", "task", "subtask", "choices", "answer_choice", "question_type", "extra"}


def _resolve_relative(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def read_jsonl(
    path: str | Path, volume_root: str | Path | None = None, on_error: OnError = "skip", *, source: str = "jsonl"
) -> DatasetReport:
    """Read the plain JSON Lines format (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such JSON Lines file")
    base = _volume_root(volume_root, path.parent)
    collector = _Collector(source, on_error)

    def build(row: int, record: Any) -> VQASample:
        if not isinstance(record, dict):
            raise _RowError(f"each line must be a JSON object, got {type(record).__name__}", "wrong type")
        volume_field = _text(record.get("volume"), "volume")
        question = _text(record.get("question"), "question")
        answer = _text(record.get("answer"), "answer")
        task = _text(record.get("task"), "task", required=False)
        subtask = _text(record.get("subtask"), "subtask", required=False)
        extra = record.get("extra", {})
        if extra is None:
            extra = {}
        if not isinstance(extra, dict):
            raise _RowError(f"'extra' must be an object, got {type(extra).__name__}", "wrong type")
        extra = {**{key: value for key, value in record.items() if key not in _JSONL_KEYS}, **extra}
        kind = _text(record.get("question_type"), "question_type", required=False)
        if kind is not None and kind.lower() not in ("open", "closed", "close"):
            raise _RowError(f"question_type must be 'open' or 'closed', got {kind!r}", "wrong type")
        choices = _choices_from(record.get("choices"))
        letter = _text(record.get("answer_choice"), "answer_choice", required=False)
        closed = choices is not None if kind is None else kind.lower() != "open"
        if closed:
            if choices is None:
                raise _RowError("a closed question needs 'choices'", "bad choices")
            letter = _closed_choice(answer, choices, letter)
        else:
            choices = letter = None
        volume = _check_exists(_resolve_relative(volume_field, base))
        return VQASample(
            volume=volume,
            question=question,
            answer=answer,
            task=task,
            subtask=subtask,
            question_type="closed" if closed else "open",
            choices=choices,
            answer_choice=letter,
            source=source,
            file=str(path),
            row=row,
            extra=extra,
        )

    collector.rows(path, _jsonl_records(path, collector), build)
    return collector.report


def read_phantoms(path: str | Path, volume_root: str | Path | None = None, on_error: OnError = "skip") -> DatasetReport:
    """Read ``photon phantoms make`` output: the folder or its ``phantoms.jsonl``.

    The JSONL is the plain format; ``extra["mask_path"]`` is made a path next to the volume's
    (relative paths resolve against the dataset folder) and checked to exist.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "phantoms.jsonl"
    report = read_jsonl(path, volume_root, on_error, source="phantoms")
    base = Path(volume_root) if volume_root is not None else path.parent
    kept: list[VQASample] = []
    for sample in report.samples:
        mask = sample.extra.get("mask_path")
        if mask is not None:
            mask_path = _resolve_relative(str(mask), base)
            if not mask_path.is_file():
                problem = RowProblem(
                    sample.file, sample.row, f"mask {str(mask_path)!r} does not exist", "missing volume"
                )
                if on_error == "raise":
                    raise DatasetError(str(problem), problem)
                report.problems.append(problem)
                continue
            sample = replace(sample, extra={**sample.extra, "mask_path": str(mask_path)})
        kept.append(sample)
    report.samples = kept
    return report


# ----------------------------------------------------------------------------- DeepTumorVQA
_OPTION = re.compile(r"(?:(?<=\s)|^)\(?([A-D])\s*[:.)]\s+")


def split_mc_question(text: str) -> tuple[str, dict[str, str]]:
    """``"Which ...? A: x B: y C: z D: w"`` -> (``"Which ...?"``, {A: x, ...}).

    Options must appear in order A, B, C, ... after the stem; returns an empty dict if not.
    """
    positions: list[tuple[str, int, int]] = []
    expected = 0
    for match in _OPTION.finditer(text):
        if match.group(1) == CHOICE_LETTERS[expected]:
            positions.append((match.group(1), match.start(), match.end()))
            expected += 1
            if expected == 4:
                break
    if len(positions) < 2:
        return text.strip(), {}
    stem = text[: positions[0][1]].strip()
    choices = {}
    for index, (letter, _, end) in enumerate(positions):
        stop = positions[index + 1][1] if index + 1 < len(positions) else len(text)
        choices[letter] = text[end:stop].strip().rstrip(",;").strip()
    return stem, choices


def _deeptumorvqa_records(path: Path, collector: _Collector) -> Iterator[tuple[int, Any]]:
    if path.suffix.lower() == ".jsonl":
        yield from _jsonl_records(path, collector)
        return
    if path.suffix.lower() == ".csv":
        yield from _csv_rows(path, ("question", "answer"), collector)
        return
    data = _load_json(path)
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
    root = _volume_root(volume_root, path.parent)
    collector = _Collector("deeptumorvqa", on_error)
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
        raise _RowError(
            f"volume for {image!r} not found under {root} (looked for <id>/ct.nii.gz, ct/<id>/ct.nii.gz, <id>.nii.gz, <id>.npy)",
            "missing volume",
        )

    def build(row: int, record: Any) -> VQASample:
        if not isinstance(record, dict):
            raise _RowError(f"each question must be an object, got {type(record).__name__}", "wrong type")
        image = _text(record.get("image_id") or record.get("image") or record.get("volume"), "image_id")
        subtype = _text(record.get("question_subtype"), "question_subtype", required=False)
        super_type = _text(record.get("question_type"), "question_type", required=False)
        answer = _text(record.get("answer"), "answer")
        numeric = subtype in DEEPTUMORVQA_NUMERIC_SUBTYPES
        letter = _text(record.get("correct_option"), "correct_option", required=False)
        multiple_choice = fmt == "mc" or (
            fmt == "auto" and not numeric and (letter is not None or record.get("mc_question"))
        )
        choices = None
        if multiple_choice:
            raw_options = record.get("options", record.get("choices"))
            stem = _text(record.get("question"), "question", required=False)
            if raw_options is not None and not (isinstance(raw_options, str) and not raw_options.strip()):
                if isinstance(raw_options, str):
                    try:
                        raw_options = json.loads(raw_options)
                    except json.JSONDecodeError:
                        raise _RowError("'options' is text but not a JSON object or list", "wrong type") from None
                choices = _choices_from(raw_options, "options")
            else:
                mc_question = _text(record.get("mc_question"), "mc_question")
                parsed_stem, choices = split_mc_question(mc_question)
                if not choices:
                    raise _RowError("no options 'A: ... B: ...' found in mc_question", "bad choices")
                stem = parsed_stem or stem
            if not stem:
                raise _RowError("empty 'question'", "empty field")
            question = stem
            letter = _closed_choice(answer, choices, letter)
        else:
            question = _text(record.get("question"), "question")
            if numeric and parse_first_number(answer) is None:
                raise _RowError(f"subtype {subtype!r} needs a numeric answer, got {answer!r}", "wrong type")
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


# ----------------------------------------------------------------------------- dispatch
READERS: dict[str, Callable[..., DatasetReport]] = {
    "3d-rad": read_3d_rad,
    "m3d-vqa": read_m3d_vqa,
    "m3d-cap": read_m3d_cap,
    "deeptumorvqa": read_deeptumorvqa,
    "jsonl": read_jsonl,
    "phantoms": read_phantoms,
}


def load_dataset(
    kind: str, path: str | Path, volume_root: str | Path | None = None, on_error: OnError = "skip", **options: Any
) -> DatasetReport:
    """Read a dataset of a named ``kind`` (one of :data:`READERS`).

    ``options`` go to the reader (``question_type`` for m3d-vqa, ``split`` for m3d-cap, ``fmt``
    for deeptumorvqa).
    """
    key = kind.strip().lower().replace("_", "-")
    key = {"3drad": "3d-rad", "m3dvqa": "m3d-vqa", "m3dcap": "m3d-cap", "deep-tumor-vqa": "deeptumorvqa"}.get(key, key)
    if key not in READERS:
        raise ConfigurationError(f"unknown dataset kind {kind!r}; known: {', '.join(READERS)}")
    if on_error not in ("skip", "raise"):
        raise ConfigurationError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    return READERS[key](path, volume_root, on_error, **options)
