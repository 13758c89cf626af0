"""The plain JSON Lines format (users' own data) and the phantom generator's output, which uses it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from photonlib.data.readers.rows import RowCollector, RowError, choices_from, closed_choice, jsonl_records, text_field
from photonlib.data.readers.volumes import existing_volume, resolve_relative, volume_folder
from photonlib.data.samples import DatasetError, DatasetReport, OnError, RowProblem, VQASample

_JSONL_KEYS = {"volume", "question", "answer", "task", "subtask", "choices", "answer_choice", "question_type", "extra"}


def read_jsonl(
    path: str | Path, volume_root: str | Path | None = None, on_error: OnError = "skip", *, source: str = "jsonl"
) -> DatasetReport:
    """Read the plain JSON Lines format (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such JSON Lines file")
    base = volume_folder(volume_root, path.parent)
    collector = RowCollector(source, on_error)

    def build(row: int, record: Any) -> VQASample:
        if not isinstance(record, dict):
            raise RowError(f"each line must be a JSON object, got {type(record).__name__}", "wrong type")
        volume_field = text_field(record.get("volume"), "volume")
        question = text_field(record.get("question"), "question")
        answer = text_field(record.get("answer"), "answer")
        task = text_field(record.get("task"), "task", required=False)
        subtask = text_field(record.get("subtask"), "subtask", required=False)
        extra = record.get("extra", {})
        if extra is None:
            extra = {}
        if not isinstance(extra, dict):
            raise RowError(f"'extra' must be an object, got {type(extra).__name__}", "wrong type")
        extra = {**{key: value for key, value in record.items() if key not in _JSONL_KEYS}, **extra}
        kind = text_field(record.get("question_type"), "question_type", required=False)
        if kind is not None and kind.lower() not in ("open", "closed", "close"):
            raise RowError(f"question_type must be 'open' or 'closed', got {kind!r}", "wrong type")
        choices = choices_from(record.get("choices"))
        letter = text_field(record.get("answer_choice"), "answer_choice", required=False)
        closed = choices is not None if kind is None else kind.lower() != "open"
        if closed:
            if choices is None:
                raise RowError("a closed question needs 'choices'", "bad choices")
            letter = closed_choice(answer, choices, letter)
        else:
            choices = letter = None
        volume = existing_volume(resolve_relative(volume_field, base))
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

    collector.rows(path, jsonl_records(path, collector), build)
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
            mask_path = resolve_relative(str(mask), base)
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
