"""What the panel shows, worked out without Qt: example questions, answer figures, status lines.

The widget in ``PhotonSlicer.py`` only moves these strings and numbers into Qt widgets, so the
wording and the arithmetic are tested under plain Python.
"""

from __future__ import annotations

from collections.abc import Mapping

#: Example questions per 3D-RAD task family (the families Photon is trained and evaluated on).
EXAMPLE_QUESTIONS: dict[str, tuple[str, ...]] = {
    "Anomaly detection": (
        "Is there any abnormality in this scan?",
        "What abnormality is present?",
    ),
    "Image observation": (
        "Which organ shows a lesion?",
        "Describe the lesion.",
    ),
    "Medical computation": (
        "What is the diameter of the lesion in millimetres?",
        "How many nodules are visible?",
    ),
    "Existence detection": (
        "Is there a lesion in the liver?",
        "Is there a pleural effusion?",
    ),
    "Static temporal diagnosis": ("Does this lesion look acute or chronic?",),
    "Longitudinal temporal diagnosis": ("Has the lesion grown compared with the previous scan?",),
}
EXAMPLE_PROMPT = "Choose an example question..."
_SEPARATOR = ": "


def example_items() -> list[str]:
    """The example combo box entries: a prompt, then "Family: question" for every example."""
    return [EXAMPLE_PROMPT] + [
        f"{family}{_SEPARATOR}{question}" for family, questions in EXAMPLE_QUESTIONS.items() for question in questions
    ]


def question_of_item(item: str) -> str:
    """The question an example entry puts in the question box ("" for the prompt)."""
    if item == EXAMPLE_PROMPT or _SEPARATOR not in item:
        return ""
    return item.split(_SEPARATOR, 1)[1]


def tokens_text(tokens_kept: int, tokens_total: int) -> str:
    """E.g. "410 of 4,000 image tokens (10.3 %)"."""
    if tokens_total <= 0:
        return "-"
    return f"{tokens_kept:,} of {tokens_total:,} image tokens ({100.0 * tokens_kept / tokens_total:.1f} %)"


#: Stages in the order the backend runs them (names as in the server's ``timings``).
TIMING_STAGES = (("preprocess", "preprocess"), ("vision", "vision"), ("prefill", "prefill"), ("decode", "decode"))


def timings_text(timings: Mapping[str, float]) -> str:
    """E.g. "preprocess 0.41 s, vision 1.20 s, prefill 0.30 s, decode 2.10 s; total 4.01 s"."""
    parts = [f"{label} {timings[key]:.2f} s" for key, label in TIMING_STAGES if key in timings]
    total = timings.get("total")
    if total is None and parts:
        total = sum(timings[key] for key, _ in TIMING_STAGES if key in timings)
    if not parts:
        return "-"
    return ", ".join(parts) + (f"; total {total:.2f} s" if total is not None else "")


CANCELLED_PREFIX = "[Cancelled: partial answer] "


def answer_text(answer: str, stopped: bool) -> str:
    """The answer box text; a partial answer (Cancel) says so first."""
    text = answer.strip() or "(the model gave an empty answer)"
    return CANCELLED_PREFIX + text if stopped else text


def progress_text(
    tokens_generated: int,
    max_new_tokens: int,
    cancel_requested: bool,
    waiting_s: float | None = None,
    wait_limit_s: float = 0.0,
) -> str:
    """Under the progress bar while a question runs (``waiting_s``: waiting for a busy backend)."""
    if cancel_requested:
        return "Cancelling ..."
    if waiting_s is not None:
        return f"Waiting for the server (busy with other questions): {waiting_s:.0f} of at most {wait_limit_s:.0f} s"
    if tokens_generated == 0:
        return "Sending the volume and reading it ..."
    return f"Answering: {tokens_generated} of at most {max_new_tokens} tokens"


def backend_status_text(state: str, message: str, asking: bool) -> str:
    """The Backend section's status line: starting / ready / busy / error, in words."""
    if asking and state == "ready":
        return "Busy: answering a question."
    prefixes = {"ready": "", "starting": "", "stopped": "", "error": "Error: "}
    return prefixes.get(state, "") + message


DEMO_MODEL_NAME = "photon-demo"


def server_text(info: Mapping) -> str:
    """E.g. "photon-s1 on cuda:0"; says so plainly when the server runs the demo model."""
    model = info.get("model") or {}
    name = model.get("name") or "Photon"
    device = model.get("device")
    text = f"{name} on {device}" if device else str(name)
    if name == DEMO_MODEL_NAME:  # the model shipped with photonlib, trained on synthetic phantoms
        text += " (demo model trained on synthetic phantoms: not for real scans)"
    return text
