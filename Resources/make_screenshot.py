"""Make the extension screenshot, Resources/Screenshots/PhotonSlicer-1.png (EXTENSION_SCREENSHOTURLS).

What it shows, and how it is made (the caption in the picture says the same):

* left: the PhotonSlicer panel itself, grabbed with ``QWidget.grab()``: PhotonSlicer.py and its
  PhotonSlicerLib opened by the test harness of ``Testing/photonslicer_tests/slicer_harness.py`` on Slicer
  5.10.0's own Python package (``../shared/platform/slicer/v5.10.0``, or
  ``PHOTONSLICER_SLICER_PLATFORM``) over slicer-core's MRML and PySide6 widgets, offscreen (the
  compiled CTK/qMRML widgets are the harness's stand-ins). The bundled example CT
  (``PhotonLib/photonlib/examples/phantom_ct.nrrd``, a synthetic phantom) is loaded with
  ``slicer.util.loadVolume``; the panel's Start launches a real local ``photon serve`` with the
  embedded demo model, and two questions are typed into the question box and asked with Ask:
  the answers, tokens, timings, heatmap and history are the backend's own;
* right: the harness has no slice views, so in their place is the picture ``photon ask --png``
  draws (``photonlib.cli.ask.save_picture``, i.e. ``photonlib.inference.overlay``) from the same
  answer: the heatmap node the panel made, on the same volume, with the same question and answer.

Run it with a Python that has slicer-core, PySide6, matplotlib and PhotonLib's backend
(PyTorch, FastAPI), e.g. this project's ``.venv``; the backend runs with
``PHOTONSLICER_BACKEND_PYTHON`` (default: this Python)::

    .venv/bin/python Resources/make_screenshot.py [--out PNG]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
OUTPUT = REPOSITORY_ROOT / "Resources" / "Screenshots" / "PhotonSlicer-1.png"
EXAMPLE_VOLUME = REPOSITORY_ROOT / "PhotonLib" / "photonlib" / "examples" / "phantom_ct.nrrd"
RELEASE = "v5.10.0"
QUESTIONS = ("Is there any abnormality in this scan?", "Is there a lesion in the liver?")
PANEL_WIDTH = 430
VIEW_WIDTH = 980
CAPTION = (
    "Not a screen capture of the Slicer application: the PhotonSlicer panel rendered by Slicer 5.10.0's own Python "
    "package in this project's test harness (PySide6 offscreen, slicer-core MRML; Slicer's compiled widgets "
    "replaced by the harness's stand-ins), after "
    "pressing Start (a real local photon serve with the embedded demo model) and asking two questions about the "
    "bundled example CT, a synthetic phantom. The harness has no slice views: next to the panel is photonlib's "
    "`photon ask --png` picture of the same answer (photonlib.inference.overlay). The demo model knows phantoms "
    "only; on real scans its answers mean nothing."
)


def _wait(session, condition, what: str, timeout: float = 180.0) -> None:
    """Let the panel's timers run until ``condition()``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        session.application.processEvents()
        time.sleep(0.05)


def run_panel(backend_python: str):
    """Open the real panel, start the backend, ask the questions; the session, panel and volume node."""
    from slicer_harness import SlicerSession

    session = SlicerSession(RELEASE)
    import slicer.util  # the release's own (Slicer imports it at start-up)

    volume = slicer.util.loadVolume(str(EXAMPLE_VOLUME))
    session.open_panel()
    widget = slicer.modules.PhotonSlicerWidget.panel
    ui = widget.ui
    ui.backendPythonLineEdit.text = backend_python
    ui.backendPythonLineEdit.editingFinished.emit()
    ui.startBackendButton.click()
    _wait(session, lambda: widget.connection.state in ("ready", "error", "not set up"), "the backend to start")
    if widget.connection.state != "ready":
        raise RuntimeError(f"the backend did not start: {widget.connection.message}")
    ui.inputVolumeSelector.setCurrentNode(volume)
    for question in QUESTIONS:
        ui.questionTextEdit.clear()
        session.type_text(ui.questionTextEdit, question)
        ui.askButton.click()
        _wait(session, lambda: widget._task is None, f"the answer to {question!r}")
        if session.messages:
            raise RuntimeError(f"the panel showed an error: {session.messages[-1]['text']}")
    return session, widget, volume


def photon_ask_png(volume_node, path: Path) -> None:
    """``photon ask --png`` of the panel's last answer: its heatmap node, question, answer and tokens."""
    import slicer
    from PhotonSlicerLib import history, volumes

    from photonlib.cli.ask import save_picture
    from photonlib.inference.overlay import Caption
    from photonlib.volume import read_volume

    heatmap_node = volume_node.GetNodeReference(volumes.HEATMAP_REFERENCE_ROLE)
    heatmap = slicer.util.arrayFromVolume(heatmap_node)
    entry = history.entries(history.history_table(volume_node, create=False))[-1]
    volume = read_volume(EXAMPLE_VOLUME)
    if heatmap.shape != volume.array.shape:
        raise RuntimeError(f"the heatmap node {heatmap.shape} is not on the volume's grid {volume.array.shape}")
    caption = Caption(entry.question, entry.answer, entry.tokens_kept, entry.tokens_total, entry.model)
    save_picture(path, volume, heatmap.astype("float32"), True, caption)


def compose(panel_image, picture_path: Path, output: Path) -> None:
    """The panel on the left; on the right the picture, and under it the caption saying how both were made."""
    from PySide6.QtCore import QRect, Qt
    from PySide6.QtGui import QColor, QFont, QImage, QPainter

    picture = QImage(str(picture_path))
    if picture.isNull():
        raise OSError(f"could not read {picture_path}")
    picture = picture.scaledToWidth(VIEW_WIDTH, Qt.SmoothTransformation)
    margin, title_height = 14, 26
    width = panel_image.width() + VIEW_WIDTH + 3 * margin
    height = margin + title_height + max(panel_image.height(), picture.height() + 300) + margin
    canvas = QImage(width, height, QImage.Format_RGB888)
    canvas.fill(QColor(44, 44, 44))
    painter = QPainter(canvas)
    painter.setPen(QColor(235, 235, 235))
    painter.setFont(QFont("Sans", 11))
    top = margin + title_height
    view_left = panel_image.width() + 2 * margin
    painter.drawText(margin, margin + 17, "The PhotonSlicer panel (QWidget.grab)")
    painter.drawText(view_left, margin + 17, "photon ask --png of the same answer (photonlib.inference.overlay)")
    painter.drawImage(margin, top, panel_image)
    painter.drawImage(view_left, top, picture)
    painter.setFont(QFont("Sans", 12))
    painter.setPen(QColor(225, 225, 170))
    caption_top = top + picture.height() + 2 * margin
    painter.drawText(QRect(view_left, caption_top, VIEW_WIDTH, height - caption_top - margin),
                     Qt.TextWordWrap | Qt.AlignLeft | Qt.AlignTop, CAPTION)  # fmt: skip
    painter.end()
    output.parent.mkdir(parents=True, exist_ok=True)
    if not canvas.save(str(output), "PNG", 9):
        raise OSError(f"could not write {output}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUTPUT, help=f"where to write the PNG (default {OUTPUT})")
    args = parser.parse_args(argv)
    backend_python = os.environ.get("PHOTONSLICER_BACKEND_PYTHON") or sys.executable
    with tempfile.TemporaryDirectory(prefix="photonslicer-screenshot-") as folder:
        # As the harness runs each release: offscreen, with settings of its own (not the user's).
        os.environ.update(QT_QPA_PLATFORM="offscreen", XDG_CONFIG_HOME=folder)
        sys.path[:0] = [str(REPOSITORY_ROOT / "Testing" / "slicer")]
        import slicer_harness

        reason = slicer_harness.release_skip_reason(RELEASE)
        if reason:
            raise SystemExit(f"cannot run Slicer {RELEASE}'s package here: {reason}")
        session, widget, volume = run_panel(backend_python)
        try:
            session.panelParent.resize(PANEL_WIDTH, max(1000, session.panelParent.sizeHint.height()))
            session.application.processEvents()
            panel_image = session.panelParent.grab().toImage()
            picture = Path(folder) / "photon-ask.png"
            photon_ask_png(volume, picture)
            compose(panel_image, picture, args.out)
        finally:
            widget.connection.shutdown(wait=5.0)
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
