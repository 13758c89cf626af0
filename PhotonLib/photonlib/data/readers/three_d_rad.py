"""3D-RAD: one CSV per subtask in ``Task<N>_<name>/`` folders (format: the package docstring)."""

from __future__ import annotations

from pathlib import Path

from photonlib.data.readers.rows import (
    CSV_CHOICE_LETTERS,
    RowCollector,
    RowError,
    closed_choice,
    csv_rows,
    is_present,
    text_field,
)
from photonlib.data.readers.volumes import VolumeResolver, volume_folder
from photonlib.data.samples import DatasetError, DatasetReport, OnError, VQASample

RAD_COLUMNS = ("Task", "Subtask", "VolumeName", "Question", "Answer", "QuestionType", "AnswerChoice")
RAD_TASKS = {
    1: "Image Observation",
    2: "Anomaly Detection",
    3: "Medical Computation",
    4: "Existence Detection",
    5: "Static Temporal Diagnosis",
    6: "Longitudinal Temporal Diagnosis",
}


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
    root = volume_folder(volume_root, path if path.is_dir() else path.parent)
    resolver = VolumeResolver(root)
    collector = RowCollector("3d-rad", on_error)
    for file in files:

        def build(row: int, fields: dict[str, str], file: Path = file) -> VQASample:
            try:
                task_id, subtask_id = int(fields["Task"]), int(fields["Subtask"])
            except ValueError:
                raise RowError(
                    f"Task and Subtask must be numbers, got {fields['Task']!r} and {fields['Subtask']!r}", "wrong type"
                ) from None
            name = text_field(fields["VolumeName"], "VolumeName")
            question = text_field(fields["Question"], "Question")
            answer = text_field(fields["Answer"], "Answer")
            kind = fields["QuestionType"].strip().lower()
            if kind not in ("open", "close", "closed"):
                raise RowError(f"QuestionType must be Open or Close, got {fields['QuestionType']!r}", "wrong type")
            choices = letter = None
            if kind != "open":
                choices = {
                    letter: fields[f"Choice {letter}"].strip()
                    for letter in CSV_CHOICE_LETTERS
                    if is_present(fields.get(f"Choice {letter}"))
                }
                if not is_present(fields["AnswerChoice"]):
                    raise RowError("a closed question without an AnswerChoice letter", "bad choices")
                letter = closed_choice(answer, choices, fields["AnswerChoice"])
            volume = resolver.resolve(name)
            if volume is None:
                raise RowError(resolver.missing_reason(name), "missing volume")
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

        collector.rows(file, csv_rows(file, RAD_COLUMNS, collector), build)
    return collector.report
