"""Library error messages made into one short line a user can read.

ITK's and teem's exceptions span many lines and carry source paths; the volume readers (files
and DICOM series alike) quote only their informative part.
"""

from __future__ import annotations

import re


def one_line(text: str, limit: int = 300) -> str:
    """Collapse a library's multi-line message (ITK's are long) into one short line."""
    text = re.sub(r"\s+", " ", str(text)).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def itk_error_reason(error: Exception) -> str:
    """The informative part of an ITK exception, on one line, without source paths.

    ITK 5.4 writes "ITK ERROR: Class(0x...): text"; teem (NRRD) adds "[nrrd] func:" lines of
    which the last is the most specific.
    """
    text = str(error)
    if "ITK ERROR:" in text:
        text = text.split("ITK ERROR:")[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = lines[-1] if lines else text
    reason = re.sub(r"^(\[\w+\]\s*)+", "", reason)
    reason = re.sub(r"^(itk::ERROR:\s*)?\w+\(0x[0-9a-fA-F]+\):\s*", "", reason)
    return one_line(reason, 160)
