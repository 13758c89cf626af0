"""M3D: the M3D-VQA CSV and the M3D-Cap caption JSON (formats: the package docstring)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from photonlib.data.readers.rows import (
    CSV_CHOICE_LETTERS,
    RowCollector,
    RowError,
    closed_choice,
    csv_rows,
    is_present,
    load_json,
    text_field,
)
from photonlib.data.readers.volumes import existing_volume, volume_folder
from photonlib.data.samples import DatasetError, DatasetReport, OnError, VQASample
from photonlib.errors import ConfigurationError

#: The instruction a caption pair is asked with (M3D-Cap).
CAPTION_QUESTION = "Describe the findings of this CT scan."
M3D_VQA_TYPES = {1: "Plane", 2: "Phase", 3: "Organ", 4: "Abnormality", 5: "Location"}


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
    root = volume_folder(volume_root, path.parent)
    required = ("Image Path", "Question", "Answer") + (
        ("Choice A", "Choice B", "Choice C", "Choice D", "Answer Choice") if question_type == "closed" else ()
    )
    collector = RowCollector("m3d-vqa", on_error)

    def build(row: int, fields: dict[str, str]) -> VQASample:
        image = text_field(fields["Image Path"], "Image Path")
        question = text_field(fields["Question"], "Question")
        answer = text_field(fields["Answer"], "Answer")
        choices = letter = None
        if question_type == "closed":
            choices = {
                letter: fields[f"Choice {letter}"].strip()
                for letter in CSV_CHOICE_LETTERS
                if is_present(fields[f"Choice {letter}"])
            }
            if not is_present(fields["Answer Choice"]):
                raise RowError("no Answer Choice letter", "bad choices")
            letter = closed_choice(answer, choices, fields["Answer Choice"])
        raw_type = (fields.get("Question Type") or "").strip()
        task = M3D_VQA_TYPES.get(int(raw_type), raw_type) if raw_type.isdigit() else (raw_type or None)
        volume = existing_volume(root / image)
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

    collector.rows(path, csv_rows(path, required, collector), build)
    return collector.report


def read_m3d_cap(
    json_path: str | Path, volume_root: str | Path | None = None, on_error: OnError = "skip", split: str | None = None
) -> DatasetReport:
    """Read M3D-Cap image-caption pairs as questions (:data:`CAPTION_QUESTION`) with the caption
    as answer. ``split`` picks one list when the JSON holds several (``train``, ``test``...)."""
    path = Path(json_path)
    data = load_json(path)
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
    root = volume_folder(volume_root, path.parent)
    collector = RowCollector("m3d-cap", on_error)

    def build(row: int, item: Any) -> VQASample:
        if not isinstance(item, dict):
            raise RowError(f"item must be an object with image and text, got {type(item).__name__}", "wrong type")
        image = text_field(item.get("image"), "image")
        text = text_field(item.get("text"), "text")
        caption_file = None
        if text.lower().endswith(".txt") and "\n" not in text:
            caption_file = root / text
            try:
                text = caption_file.read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                raise RowError(f"caption file {str(caption_file)!r} does not exist", "missing caption") from None
            except (OSError, UnicodeDecodeError) as error:
                raise RowError(f"caption file {str(caption_file)!r} unreadable ({error})", "missing caption") from None
            if not text:
                raise RowError(f"caption file {str(caption_file)!r} is empty", "empty field")
        volume = existing_volume(root / image)
        extra = {"image_path": image, "split": split}
        if caption_file is not None:
            extra["caption_file"] = str(caption_file)
        return VQASample(
            volume, CAPTION_QUESTION, text, task="Caption", source="m3d-cap", file=str(path), row=row, extra=extra
        )

    collector.rows(path, enumerate(items, start=1), build)
    return collector.report
