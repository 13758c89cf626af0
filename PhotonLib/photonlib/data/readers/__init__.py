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

from collections.abc import Callable
from pathlib import Path
from typing import Any

from photonlib.data.readers.deeptumorvqa import DEEPTUMORVQA_NUMERIC_SUBTYPES, read_deeptumorvqa, split_mc_question
from photonlib.data.readers.jsonl import read_jsonl, read_phantoms
from photonlib.data.readers.m3d import CAPTION_QUESTION, M3D_VQA_TYPES, read_m3d_cap, read_m3d_vqa
from photonlib.data.readers.three_d_rad import RAD_COLUMNS, RAD_TASKS, read_3d_rad
from photonlib.data.readers.volumes import VolumeResolver, volume_stem
from photonlib.data.samples import DatasetReport, OnError
from photonlib.errors import ConfigurationError

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


__all__ = [
    "CAPTION_QUESTION",
    "DEEPTUMORVQA_NUMERIC_SUBTYPES",
    "M3D_VQA_TYPES",
    "RAD_COLUMNS",
    "RAD_TASKS",
    "READERS",
    "VolumeResolver",
    "load_dataset",
    "read_3d_rad",
    "read_deeptumorvqa",
    "read_jsonl",
    "read_m3d_cap",
    "read_m3d_vqa",
    "read_phantoms",
    "split_mc_question",
    "volume_stem",
]
