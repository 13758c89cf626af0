"""Dataset readers on files the tests write (and the real 3D-RAD test CSVs when present).

Every reader must turn good rows into VQASamples and report, count and skip (or raise on) the
bad ones: never drop a row silently.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from photonlib.data import (
    CAPTION_QUESTION,
    DatasetError,
    VQASample,
    load_dataset,
    read_3d_rad,
    read_deeptumorvqa,
    read_jsonl,
    read_m3d_cap,
    read_m3d_vqa,
)
from photonlib.data.readers import RAD_COLUMNS, split_mc_question

from support import SHARED

THREE_D_RAD_TEST = SHARED / "data" / "3d-rad" / "test"
needs_3d_rad = pytest.mark.skipif(not THREE_D_RAD_TEST.is_dir(), reason="3D-RAD test CSVs (shared/data) not present")

RAD_HEADER = list(RAD_COLUMNS) + ["Choice A", "Choice B", "Choice C", "Choice D"]
STATUS_CHOICES = [
    "Refractory Lesion (Persistent or recurrent, now present)",
    "Resolved Lesion (Previously present or recurrent, now absent)",
    "New Lesion (Absent previously, now present)",
    "No Abnormality (Always absent)",
]


def tiny_npy(path: Path) -> Path:
    """A benchmark-like (1, D, H, W) array in [0, 1]."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:  # a file object: np.save adds no ".npy" to other names
        np.save(handle, np.linspace(0, 1, 4 * 5 * 6, dtype=np.float32).reshape(1, 4, 5, 6))
    return path


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def data_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV, computed independently of the reader."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows, line = [], 1
        for row in reader:
            rows.append((line + 1, row))
            line = reader.line_num
        return rows


# ----------------------------------------------------------------------------- 3D-RAD, real CSVs
@needs_3d_rad
def test_real_3d_rad_csv_with_some_volumes_present(tmp_path):
    csv_path = THREE_D_RAD_TEST / "Task1_Image_Observation" / "Anatomical_observation.csv"
    rows = data_rows(csv_path)
    names = sorted({row["VolumeName"] for _, row in rows})
    stems = [name.removesuffix(".nii.gz") for name in names]
    # Three of the volumes exist, in the layouts the reader accepts: <stem>.npy at the root,
    # the exact name, and <stem>.npy in a nested folder (found by indexing the root).
    tiny_npy(tmp_path / f"{stems[0]}.npy")
    tiny_npy(tmp_path / names[1])  # a .npy array saved under the .nii.gz name is still "the file"
    tiny_npy(tmp_path / "nested" / "deeper" / f"{stems[2]}.npy")
    present = set(names[:3])

    report = read_3d_rad(csv_path, volume_root=tmp_path)

    expected = [(line, row) for line, row in rows if row["VolumeName"] in present]
    assert len(report.samples) == len(expected) > 0
    assert report.rows_read == len(rows) == 142
    assert len(report.problems) == len(rows) - len(expected)
    assert report.problem_counts == {"missing volume": len(rows) - len(expected)}
    assert [problem.row for problem in report.problems] == [
        line for line, row in rows if row["VolumeName"] not in present
    ]
    assert all(problem.file == str(csv_path) for problem in report.problems)
    first_missing_line, first_missing = next((line, row) for line, row in rows if row["VolumeName"] not in present)
    first = report.problems[0]
    assert first.row == first_missing_line
    assert first.reason.startswith(f"volume '{first_missing['VolumeName']}' not found under {tmp_path}")
    sample = report.samples[0]
    line, row = expected[0]
    assert (sample.row, sample.question, sample.answer) == (line, row["Question"], row["Answer"])
    assert sample.task == "Image Observation" and sample.subtask == "Anatomical_observation"
    assert sample.question_type == "open" and sample.choices is None and sample.answer_choice is None
    assert sample.source == "3d-rad" and sample.volume.is_file()
    assert {s.volume.name for s in report.samples} == {f"{stems[0]}.npy", names[1], f"{stems[2]}.npy"}
    summary = report.summary()
    assert f"read 142 rows from 1 file; {len(expected)} usable samples" in summary
    assert f"{len(rows) - len(expected)} missing volume" in summary and "row " in summary

    with pytest.raises(DatasetError) as raised:
        read_3d_rad(csv_path, volume_root=tmp_path, on_error="raise")
    assert str(raised.value).startswith(f"{csv_path} row {first_missing_line}: volume")
    assert raised.value.problem.category == "missing volume"


@needs_3d_rad
def test_real_3d_rad_folder_reads_every_task_and_its_closed_questions(tmp_path):
    # Volumes for two closed-question files: Task4 (Yes/No) and Task5 (4 choices with commas).
    existence = THREE_D_RAD_TEST / "Task4_Existence_Detection" / "Lung nodule.csv"
    status = THREE_D_RAD_TEST / "Task5_Static_Temporal_Diagnosis" / "e.csv"
    for path in (existence, status):
        for _, row in data_rows(path)[:5]:
            tiny_npy(tmp_path / f"{row['VolumeName'].removesuffix('.nii.gz')}.npy")

    report = load_dataset("3d-rad", THREE_D_RAD_TEST, volume_root=tmp_path)

    # The official per-task counts of the test split (SOURCE.md) add up to 33,910 rows.
    assert report.rows_read == 33910
    assert len(report.files) == 41
    assert set(report.problem_counts) == {"missing volume"}
    assert len(report.samples) + len(report.problems) == 33910
    closed = [s for s in report.samples if s.question_type == "closed"]
    assert {s.task for s in closed} >= {"Existence Detection", "Static Temporal Diagnosis"}
    for sample in closed:
        assert sample.choices[sample.answer_choice] == sample.answer
        if sample.task == "Existence Detection":
            assert sample.choices == {"A": "Yes", "B": "No"}
        if sample.task == "Static Temporal Diagnosis":
            assert list(sample.choices.values()) == STATUS_CHOICES  # quoted commas kept
            assert sample.subtask == "e" and sample.extra["subtask_id"] == 4
    assert {s.task for s in report.samples if s.question_type == "open"} <= {
        "Image Observation",
        "Anomaly Detection",
        "Medical Computation",
    }


# ----------------------------------------------------------------------------- 3D-RAD, written fixtures
def test_3d_rad_fixture_malformed_rows_are_counted_skipped_or_raised(tmp_path):
    tiny_npy(tmp_path / "vols" / "valid_1_a_1.npy")
    rows = [
        ["1", "1", "valid_1_a_1.nii.gz", "Where is the nodule?", "Right upper lobe.", "Open", "-", "-", "-", "-", "-"],
        [
            "5",
            "1",
            "valid_1_a_1.nii.gz",
            "How would you classify it?",
            STATUS_CHOICES[1],
            "Close",
            "B",
            *STATUS_CHOICES,
        ],
        ["1", "1", "valid_1_a_1.nii.gz", "  ", "Right upper lobe.", "Open", "-", "-", "-", "-", "-"],  # line 4
        ["4", "10", "valid_1_a_1.nii.gz", "Is there a lung nodule?", "Yes", "Close", "A", "-", "-", "-", "-"],  # 5
        ["4", "10", "valid_1_a_1.nii.gz", "Is there a lung nodule?", "Yes", "Close", "C", "Yes", "No", "-", "-"],  # 6
        ["4", "10", "valid_1_a_1.nii.gz", "Is there a lung nodule?", "Yes"],  # 7: too few fields
        ["4", "10", "valid_1_a_1.nii.gz", "Is there a lung nodule?", "Yes", "Maybe", "A", "Yes", "No", "-", "-"],  # 8
        [
            "four",
            "10",
            "valid_1_a_1.nii.gz",
            "Is there a lung nodule?",
            "Yes",
            "Close",
            "A",
            "Yes",
            "No",
            "-",
            "-",
        ],  # 9
        ["4", "10", "valid_1_a_1.nii.gz", "Is there a lung nodule?", "No", "Close", "A", "Yes", "No", "-", "-"],  # 10
        ["4", "10", "valid_9_z_9.nii.gz", "Is there a lung nodule?", "No", "Close", "B", "Yes", "No", "-", "-"],  # 11
    ]
    csv_path = write_csv(tmp_path / "Task4_Existence_Detection" / "Lung nodule.csv", RAD_HEADER, rows)

    report = read_3d_rad(tmp_path, volume_root=tmp_path / "vols")

    assert report.rows_read == 10 and len(report.samples) == 2
    assert [(p.row, p.category) for p in report.problems] == [
        (4, "empty field"),
        (5, "bad choices"),
        (6, "bad choices"),
        (7, "missing column"),
        (8, "wrong type"),
        (9, "wrong type"),
        (10, "bad choices"),
        (11, "missing volume"),
    ]
    assert "answer letter 'C' is not among the choices ['A', 'B']" in report.problems[2].reason
    assert "row has 5 fields; the header has 11" in report.problems[3].reason
    assert "the answer 'No' is not the text of choice A ('Yes')" in report.problems[6].reason
    open_sample, closed_sample = report.samples
    assert open_sample.question_type == "open" and open_sample.row == 2
    assert closed_sample.task == "Static Temporal Diagnosis" and closed_sample.answer_choice == "B"
    assert closed_sample.choices == dict(zip("ABCD", STATUS_CHOICES))
    assert closed_sample.question_with_choices().splitlines()[1:] == [
        f"{letter}. {text}" for letter, text in zip("ABCD", STATUS_CHOICES)
    ]
    assert report.problem_counts == {
        "bad choices": 3,
        "wrong type": 2,
        "empty field": 1,
        "missing column": 1,
        "missing volume": 1,
    }

    with pytest.raises(DatasetError, match=rf"{csv_path} row 4: empty 'Question'"):
        read_3d_rad(csv_path, volume_root=tmp_path / "vols", on_error="raise")


def test_3d_rad_missing_header_column_is_a_file_problem(tmp_path):
    header = [name for name in RAD_HEADER if name != "AnswerChoice"]
    path = write_csv(tmp_path / "Task1_x" / "a.csv", header, [["1"] * len(header)])
    report = read_3d_rad(path, volume_root=tmp_path)
    assert report.samples == [] and [(p.row, p.category) for p in report.problems] == [(1, "missing column")]
    assert "missing column(s) AnswerChoice" in report.problems[0].reason
    with pytest.raises(DatasetError, match="row 1: missing column"):
        read_3d_rad(path, volume_root=tmp_path, on_error="raise")


def test_3d_rad_refuses_what_is_not_a_dataset(tmp_path):
    with pytest.raises(DatasetError, match="no 3D-RAD CSV files"):
        read_3d_rad(tmp_path)
    with pytest.raises(DatasetError, match="no such 3D-RAD CSV file or folder"):
        read_3d_rad(tmp_path / "absent.csv")
    path = write_csv(tmp_path / "Task1_x" / "a.csv", RAD_HEADER, [])
    with pytest.raises(DatasetError, match="volume root .* is not a folder"):
        read_3d_rad(path, volume_root=tmp_path / "no-such-folder")


# ----------------------------------------------------------------------------- M3D-VQA
M3D_HEADER = [
    "Image Path",
    "Text",
    "Question Type",
    "Question",
    "Choice A",
    "Choice B",
    "Choice C",
    "Choice D",
    "Answer",
    "Answer Choice",
]


def test_m3d_vqa_closed_and_open(tmp_path):
    tiny_npy(tmp_path / "M3D_Cap_npy" / "ct_case" / "000006" / "Axial_C__portal_venous" / "0.npy")
    image = "M3D_Cap_npy/ct_case/000006/Axial_C__portal_venous/0.npy"
    rows = [
        [
            image,
            "a report, with commas",
            "1",
            "Which plane is the image in?",
            "Sagittal",
            "Axial",
            "Coronal",
            "Oblique",
            "Axial",
            "B",
        ],
        [image, "", "4", "What abnormality is seen?", "Cyst", "Mass", "Stone", "None", "Mass", "E"],  # bad letter
        ["M3D_Cap_npy/missing/0.npy", "", "3", "Which organ?", "Liver", "Spleen", "Kidney", "Lung", "Liver", "A"],
        [image, "", "2", "", "Arterial", "Portal", "Delayed", "None", "Portal", "B"],  # empty question
    ]
    path = write_csv(tmp_path / "M3D_VQA_test.csv", M3D_HEADER, rows)

    report = read_m3d_vqa(path, volume_root=tmp_path)
    assert len(report.samples) == 1 and report.rows_read == 4
    sample = report.samples[0]
    assert sample.volume == tmp_path / image
    assert (sample.question_type, sample.answer_choice, sample.answer, sample.task) == ("closed", "B", "Axial", "Plane")
    assert sample.choices == {"A": "Sagittal", "B": "Axial", "C": "Coronal", "D": "Oblique"}
    assert [(p.row, p.category) for p in report.problems] == [
        (3, "bad choices"),
        (4, "missing volume"),
        (5, "empty field"),
    ]

    opened = load_dataset("m3d-vqa", path, volume_root=tmp_path, question_type="open")
    assert [s.question_type for s in opened.samples] == ["open", "open"]  # the bad letter no longer matters
    assert opened.samples[1].answer == "Mass" and opened.samples[1].choices is None
    with pytest.raises(DatasetError, match=r"M3D_VQA_test.csv row 3: answer letter 'E'"):
        read_m3d_vqa(path, volume_root=tmp_path, on_error="raise")


# ----------------------------------------------------------------------------- M3D-Cap
def test_m3d_cap_captions_from_files_and_inline(tmp_path):
    tiny_npy(tmp_path / "ct_case" / "000001" / "Axial" / "0.npy")
    tiny_npy(tmp_path / "ct_case" / "000002" / "Axial" / "0.npy")
    (tmp_path / "ct_case" / "000001" / "text.txt").write_text("Findings: a 2 cm cyst in the liver.\n")
    data = {
        "train": [
            {"image": "ct_case/000001/Axial/0.npy", "text": "ct_case/000001/text.txt"},
            {"image": "ct_case/000002/Axial/0.npy", "text": "No acute abnormality."},
            {"image": "ct_case/000002/Axial/0.npy", "text": "ct_case/000002/text.txt"},  # caption file missing
            {"image": "ct_case/000003/Axial/0.npy", "text": "Normal."},  # volume missing
            ["not", "an", "object"],
            {"image": "ct_case/000002/Axial/0.npy", "text": ""},
        ],
        "test": [{"image": "ct_case/000002/Axial/0.npy", "text": "Normal."}],
    }
    path = tmp_path / "M3D_Cap.json"
    path.write_text(json.dumps(data))

    report = read_m3d_cap(path, split="train")
    assert [s.answer for s in report.samples] == ["Findings: a 2 cm cyst in the liver.", "No acute abnormality."]
    assert all(s.question == CAPTION_QUESTION and s.task == "Caption" for s in report.samples)
    assert [(p.row, p.category) for p in report.problems] == [
        (3, "missing caption"),
        (4, "missing volume"),
        (5, "wrong type"),
        (6, "empty field"),
    ]
    with pytest.raises(DatasetError, match="holds the splits train, test; choose one"):
        read_m3d_cap(path)
    assert len(load_dataset("m3d-cap", path, split="test").samples) == 1
    path.write_text(json.dumps(data["test"]))
    assert len(read_m3d_cap(path).samples) == 1


# ----------------------------------------------------------------------------- DeepTumorVQA
def test_split_mc_question():
    stem, choices = split_mc_question(
        "How would you classify the splenic enlargement based on volume? A: Normal (no splenomegaly) "
        "B: Moderate splenomegaly C: Severe splenomegaly D: Mild splenomegaly"
    )
    assert stem == "How would you classify the splenic enlargement based on volume?"
    assert choices == {
        "A": "Normal (no splenomegaly)",
        "B": "Moderate splenomegaly",
        "C": "Severe splenomegaly",
        "D": "Mild splenomegaly",
    }
    assert split_mc_question("A question with no options?") == ("A question with no options?", {})


def test_deeptumorvqa_multiple_choice_numeric_and_bad_rows(tmp_path):
    (tmp_path / "ct" / "BDMAP_00000001").mkdir(parents=True)
    (tmp_path / "ct" / "BDMAP_00000001" / "ct.nii.gz").write_bytes(b"not read by the reader")
    mc = {
        "qid": "bench_00017",
        "image_id": "BDMAP_00000001",
        "question": "How would you classify the splenic enlargement based on volume?",
        "answer": "Normal (no splenomegaly)",
        "mc_question": "How would you classify the splenic enlargement based on volume? A: Normal (no splenomegaly) "
        "B: Moderate C: Severe D: Mild",
        "correct_option": "A",
        "organ": "spleen",
        "question_type": "medical reasoning",
        "question_subtype": "splenomegaly grading",
    }
    numeric = {
        "qid": "bench_00018",
        "image_id": "BDMAP_00000001",
        "question": "What is the volume of the liver in cm3?",
        "answer": "1523.4",
        "mc_question": "What is the volume of the liver in cm3? A: 1523.4 B: 900 C: 2100 D: 3000",
        "correct_option": "A",
        "question_type": "measurement",
        "question_subtype": "organ volume measurement",
    }
    listed = {**mc, "qid": "q3", "options": ["Normal (no splenomegaly)", "Mild"], "mc_question": None}
    lines = [
        mc,
        numeric,
        listed,
        "{not json",
        {**numeric, "qid": "q5", "answer": "about half"},  # numeric subtype without a number
        {**mc, "qid": "q6", "correct_option": "D"},  # answer text is not choice D
        {**mc, "qid": "q7", "image_id": "BDMAP_99999999"},
        "",
        {**mc, "qid": "q9", "mc_question": "No options here", "correct_option": "A"},
    ]
    path = write_jsonl(tmp_path / "test_qa.jsonl", lines)

    report = read_deeptumorvqa(path, volume_root=tmp_path)
    assert [s.extra["qid"] for s in report.samples] == ["bench_00017", "bench_00018", "q3"]
    first, second, third = report.samples
    assert first.question_type == "closed" and first.answer_choice == "A"
    assert first.question == mc["question"] and first.choices["D"] == "Mild"
    assert (first.task, first.subtask, first.extra["organ"]) == ("medical reasoning", "splenomegaly grading", "spleen")
    assert second.question_type == "open" and second.choices is None and second.extra["answer_type"] == "numeric"
    assert third.choices == {"A": "Normal (no splenomegaly)", "B": "Mild"} and third.answer_choice == "A"
    assert first.volume == tmp_path / "ct" / "BDMAP_00000001" / "ct.nii.gz"
    assert [(p.row, p.category) for p in report.problems] == [
        (4, "bad json"),
        (5, "wrong type"),
        (6, "bad choices"),
        (7, "missing volume"),
        (9, "bad choices"),
    ]
    freeform = read_deeptumorvqa(path, volume_root=tmp_path, fmt="freeform")
    assert all(s.question_type == "open" for s in freeform.samples)
    mc_only = read_deeptumorvqa(path, volume_root=tmp_path, fmt="mc")
    assert mc_only.samples[1].question_type == "closed" and mc_only.samples[1].answer_choice == "A"

    nested = tmp_path / "test_qa.json"
    nested.write_text(json.dumps({"version": "2.0", "num_questions": 2, "questions": [mc, numeric]}))
    assert len(load_dataset("deeptumorvqa", nested, volume_root=tmp_path).samples) == 2
    with pytest.raises(DatasetError, match=r"test_qa.jsonl row 4: not valid JSON"):
        read_deeptumorvqa(path, volume_root=tmp_path, on_error="raise")


# ----------------------------------------------------------------------------- plain JSONL
def test_plain_jsonl_good_rows(tmp_path):
    volume = tiny_npy(tmp_path / "cases" / "a.npy")
    absolute = tiny_npy(tmp_path / "elsewhere" / "b.npy")
    lines = [
        {
            "volume": "cases/a.npy",
            "question": "Is there a lesion?",
            "answer": "Yes",
            "choices": ["Yes", "No"],
            "task": "Existence",
        },
        {"volume": str(absolute), "question": "Diameter?", "answer": 24, "id": "x7", "extra": {"mask": "m.nii.gz"}},
        "",
        {
            "volume": "cases/a.npy",
            "question": "Organ?",
            "answer": "Liver",
            "choices": {"b": "Liver", "a": "Spleen"},
            "answer_choice": "b",
        },
        {
            "volume": "cases/a.npy",
            "question": "Open anyway",
            "answer": "Yes",
            "choices": ["Yes", "No"],
            "question_type": "open",
        },
    ]
    path = write_jsonl(tmp_path / "data.jsonl", lines)

    report = read_jsonl(path)
    assert report.problems == [] and report.rows_read == 4
    first, second, third, fourth = report.samples
    assert first.volume == volume and first.choices == {"A": "Yes", "B": "No"} and first.answer_choice == "A"
    assert first.question_type == "closed" and first.task == "Existence" and first.row == 1
    assert second.volume == absolute and second.answer == "24" and second.question_type == "open"
    assert second.extra == {"id": "x7", "mask": "m.nii.gz"}
    assert third.choices == {"A": "Spleen", "B": "Liver"} and third.answer_choice == "B" and third.row == 4
    assert fourth.question_type == "open" and fourth.choices is None

    # A sample written back as a record reads back the same.
    again = write_jsonl(tmp_path / "again.jsonl", [sample.to_record(relative_to=tmp_path) for sample in report.samples])
    reread = read_jsonl(again)
    assert [(s.volume, s.question, s.answer, s.choices, s.answer_choice, s.task) for s in reread.samples] == [
        (s.volume, s.question, s.answer, s.choices, s.answer_choice, s.task) for s in report.samples
    ]

    # volume_root replaces the JSONL's folder as the base of relative paths.
    moved = tmp_path / "root"
    tiny_npy(moved / "cases" / "a.npy")
    assert read_jsonl(path, volume_root=moved).samples[0].volume == moved / "cases" / "a.npy"


def test_plain_jsonl_malformed_rows(tmp_path):
    tiny_npy(tmp_path / "a.npy")
    good = {"volume": "a.npy", "question": "Q?", "answer": "A."}
    lines = [
        good,
        '{"volume": "a.npy", "question": "unterminated',
        {**good, "question": ["not", "text"]},
        {**good, "answer": ""},
        {"question": "Q?", "answer": "A."},
        {**good, "choices": "Yes/No"},
        {**good, "question_type": "closed"},
        {**good, "answer": "Maybe", "choices": ["Yes", "No"]},
        {**good, "answer": "Yes", "choices": ["Yes", "No"], "answer_choice": "C"},
        {**good, "extra": [1, 2]},
        {**good, "volume": "missing.npy"},
        ["a", "list"],
        {**good, "question_type": "sometimes"},
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", lines)

    report = read_jsonl(path)
    assert len(report.samples) == 1 and report.rows_read == 13
    assert [(p.row, p.category) for p in report.problems] == [
        (2, "bad json"),
        (3, "wrong type"),
        (4, "empty field"),
        (5, "missing field"),
        (6, "wrong type"),
        (7, "bad choices"),
        (8, "bad choices"),
        (9, "bad choices"),
        (10, "wrong type"),
        (11, "missing volume"),
        (12, "wrong type"),
        (13, "wrong type"),
    ]
    summary = report.summary()
    assert summary.startswith("jsonl: read 13 rows from 1 file; 1 usable samples (0 closed, 1 open); 12 rows not used:")
    assert "5 wrong type" in summary and f"First: {path} row 2: not valid JSON" in summary
    with pytest.raises(DatasetError) as raised:
        read_jsonl(path, on_error="raise")
    assert str(raised.value).startswith(f"{path} row 2: not valid JSON")
    assert isinstance(raised.value, ValueError)


# ----------------------------------------------------------------------------- dispatch
def test_load_dataset_dispatch_and_bad_arguments(tmp_path):
    tiny_npy(tmp_path / "a.npy")
    path = write_jsonl(tmp_path / "d.jsonl", [{"volume": "a.npy", "question": "Q?", "answer": "A."}])
    for kind in ("jsonl", "JSONL", " jsonl "):
        assert len(load_dataset(kind, path).samples) == 1
    with pytest.raises(ValueError, match="unknown dataset kind 'csv'; known: 3d-rad, m3d-vqa"):
        load_dataset("csv", path)
    with pytest.raises(ValueError, match="on_error must be 'skip' or 'raise'"):
        load_dataset("jsonl", path, on_error="ignore")
    with pytest.raises(DatasetError, match="no such JSON Lines file"):
        load_dataset("jsonl", tmp_path / "absent.jsonl")
    sample = load_dataset("jsonl", path).samples[0]
    assert isinstance(sample, VQASample) and sample.source == "jsonl"
