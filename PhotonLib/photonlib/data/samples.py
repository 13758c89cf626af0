"""The one sample type every dataset reader returns, and the report of what a read found.

A reader never drops a row silently: a row it cannot use becomes a :class:`RowProblem` (file,
1-based row, reason) in the :class:`DatasetReport`, counted by category. With
``on_error="raise"`` the first problem raises :class:`DatasetError` instead.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from photonlib.errors import PhotonInputError

OnError = Literal["skip", "raise"]
QuestionType = Literal["open", "closed"]



class DatasetError(PhotonInputError):
    """A dataset file (or one of its rows) cannot be used; the message names file, row and reason."""

    def __init__(self, message: str, problem: RowProblem | None = None) -> None:
        super().__init__(message)
        self.problem = problem


@dataclass(frozen=True)
class RowProblem:
    """Why one row (or a whole file, row 1 for its header) was not turned into a sample.

    ``row`` is the 1-based line number in a text file (CSV header = line 1, so the first data
    row is line 2; for JSON Lines the line of the record) or the 1-based item number in a JSON
    list. ``category`` groups problems for counting (``"missing volume"``, ``"empty field"``...).
    """

    file: str
    row: int
    reason: str
    category: str = "malformed row"

    def __str__(self) -> str:
        return f"{self.file} row {self.row}: {self.reason}"


@dataclass(frozen=True)
class VQASample:
    """One question about one volume, whatever dataset it came from.

    Attributes:
        volume: path of the volume file (or DICOM folder); checked to exist, not loaded.
        question: the question text as the dataset gives it, without the choices.
        answer: the reference answer text (for closed questions the text of the right choice).
        task, subtask: the dataset's grouping for per-task metrics (None when it has none).
        question_type: ``"closed"`` when ``choices`` are offered, else ``"open"``.
        choices: letter -> choice text for closed questions, else None.
        answer_choice: the letter of the right choice for closed questions, else None.
        source: dataset name (``"3d-rad"``, ``"m3d-vqa"``, ``"m3d-cap"``, ``"deeptumorvqa"``,
            ``"jsonl"``, ``"phantoms"``).
        file, row: where the sample was read (for error reports and tracing results back).
        extra: dataset-specific facts (ids, phantom lesion organ/size/mask path, answer type...).
    """

    volume: Path
    question: str
    answer: str
    task: str | None = None
    subtask: str | None = None
    question_type: QuestionType = "open"
    choices: dict[str, str] | None = field(default=None, hash=False)
    answer_choice: str | None = None
    source: str = "jsonl"
    file: str = ""
    row: int = 0
    extra: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def is_closed(self) -> bool:
        return self.question_type == "closed"

    def question_with_choices(self) -> str:
        """The question followed by one ``"A. text"`` line per choice (closed questions only)."""
        if not self.choices:
            return self.question
        lines = [self.question] + [f"{letter}. {text}" for letter, text in self.choices.items()]
        return "\n".join(lines)

    def to_record(self, relative_to: Path | None = None) -> dict[str, Any]:
        """The plain JSON Lines record of this sample (see :func:`photonlib.data.read_jsonl`)."""
        volume = Path(self.volume)
        if relative_to is not None:
            try:
                volume = volume.relative_to(relative_to)
            except ValueError:
                pass
        record: dict[str, Any] = {"volume": volume.as_posix(), "question": self.question, "answer": self.answer}
        if self.task is not None:
            record["task"] = self.task
        if self.subtask is not None:
            record["subtask"] = self.subtask
        record["question_type"] = self.question_type
        if self.choices:
            record["choices"] = dict(self.choices)
            record["answer_choice"] = self.answer_choice
        if self.extra:
            record["extra"] = self.extra
        return record


@dataclass
class DatasetReport:
    """What a reader produced: the usable samples and every row it could not use."""

    source: str
    samples: list[VQASample] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    rows_read: int = 0

    @property
    def problem_counts(self) -> dict[str, int]:
        """Number of problems per category, most frequent first."""
        return dict(Counter(problem.category for problem in self.problems).most_common())

    @property
    def task_counts(self) -> dict[str, int]:
        return dict(Counter(sample.task or "(none)" for sample in self.samples))

    def __len__(self) -> int:
        return len(self.samples)

    def extend(self, other: DatasetReport) -> None:
        self.samples.extend(other.samples)
        self.problems.extend(other.problems)
        self.files.extend(other.files)
        self.rows_read += other.rows_read

    def summary(self) -> str:
        """One paragraph: rows read, samples kept, problems by category with the first example."""
        files = f"{len(self.files)} file" + ("" if len(self.files) == 1 else "s")
        text = f"{self.source}: read {self.rows_read} rows from {files}; {len(self.samples)} usable samples"
        closed = sum(1 for sample in self.samples if sample.is_closed)
        if self.samples:
            text += f" ({closed} closed, {len(self.samples) - closed} open)"
        if not self.problems:
            return text + "; no problems."
        counts = ", ".join(f"{count} {category}" for category, count in self.problem_counts.items())
        return f"{text}; {len(self.problems)} rows not used: {counts}. First: {self.problems[0]}."
