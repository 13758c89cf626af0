"""Datasets: benchmark readers, a plain JSON Lines format, and a synthetic phantom generator.

Typical use::

    from photonlib.data import load_dataset

    report = load_dataset("3d-rad", "3D-RAD/test", volume_root="3D-RAD/volumes")
    print(report.summary())          # rows read, samples kept, problems by category
    for sample in report.samples:    # VQASample: volume, question, answer, task, choices...
        ...

``photonlib.data.phantoms`` (``photon phantoms make``) writes CT phantoms with known lesions,
their label maps and questions, readable with ``load_dataset("phantoms", folder)``.
"""

from photonlib.data.readers import (
    CAPTION_QUESTION,
    READERS,
    VolumeResolver,
    load_dataset,
    read_3d_rad,
    read_deeptumorvqa,
    read_jsonl,
    read_m3d_cap,
    read_m3d_vqa,
    read_phantoms,
)
from photonlib.data.samples import DatasetError, DatasetReport, RowProblem, VQASample

__all__ = [
    "CAPTION_QUESTION",
    "READERS",
    "DatasetError",
    "DatasetReport",
    "RowProblem",
    "VQASample",
    "VolumeResolver",
    "load_dataset",
    "read_3d_rad",
    "read_deeptumorvqa",
    "read_jsonl",
    "read_m3d_cap",
    "read_m3d_vqa",
    "read_phantoms",
]
