"""Compose the extension screenshot, Resources/Screenshots/PhotonSlicer-1.png (EXTENSION_SCREENSHOTURLS).

Slicer cannot run where this project is built, so this is a composed rendering, not a Slicer
screen capture, and the picture says so in its caption:

* left: the module panel, Resources/UI/PhotonSlicer.ui rendered by PySide6 offscreen (the
  CTK/MRML classes replaced by the stand-ins of Testing/slicer/ui_stand_ins.py), filled in as
  after one question;
* right: three slices of a synthetic CT phantom with a liver lesion (``photon phantoms``,
  conspicuous profile, a seed the demo model never trained on) with the heatmap overlaid by
  ``photonlib.inference.overlay``, from real ``photon ask`` runs of the embedded demo model: the
  answers, token counts, timings and heatmap in the panel are those of the runs.

    .venv/bin/python Resources/make_screenshot.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
OUTPUT = REPOSITORY_ROOT / "Resources" / "Screenshots" / "PhotonSlicer-1.png"
UI_FILE = REPOSITORY_ROOT / "PhotonSlicer" / "Resources" / "UI" / "PhotonSlicer.ui"
QUESTION = "Is there a lesion in the liver?"
FIRST_QUESTION = "Is there any abnormality in this scan?"
PHANTOM_SEED, PHANTOM_INDEX = 7, 1  # the demo model trained on seed 0 and is documented on seed 1000
sys.path[:0] = [str(REPOSITORY_ROOT / "Testing" / "slicer"), str(REPOSITORY_ROOT / "PhotonSlicer")]


def write_phantom(folder: Path) -> Path:
    """A conspicuous liver lesion phantom as NIfTI, as `photon phantoms make` writes them."""
    from photonlib.data.phantoms import make_case
    from photonlib.volume import write_volume

    case = make_case(PHANTOM_SEED, PHANTOM_INDEX, "small", "liver", profile="conspicuous")
    return write_volume(folder / "phantom_ct.nii.gz", case.hu, case.geometry)


def run_photon_ask(volume_path: Path, question: str, heatmap_path: Path | None = None) -> dict:
    """A real answer (tokens, timings, heatmap) of the embedded demo model."""
    command = [sys.executable, "-m", "photonlib.cli.main", "ask", str(volume_path), question, "--device", "cpu",
               "--max-new-tokens", "32", "--json"]  # fmt: skip
    if heatmap_path is not None:
        command += ["--heatmap", str(heatmap_path)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def overlay_picture(volume_path: Path, heatmap_path: Path):
    import numpy as np

    from photonlib.inference.overlay import overlay_panels
    from photonlib.volume import read_volume

    volume = read_volume(volume_path)
    heatmap = read_volume(heatmap_path)
    picture = overlay_panels(volume.array, heatmap.array.astype(np.float32), volume.geometry, (-160.0, 240.0))
    return np.ascontiguousarray(picture)


def fill_panel(panel, first: dict, result: dict) -> None:
    from PhotonSlicerLib import panel as wording
    from PySide6.QtGui import QStandardItem, QStandardItemModel
    from PySide6.QtWidgets import (
        QComboBox,
        QLabel,
        QLineEdit,
        QPlainTextEdit,
        QProgressBar,
        QSpinBox,
        QTableView,
        QTextEdit,
        QWidget,
    )

    def child(kind, name):
        return panel.findChild(kind, name)

    child(QLineEdit, "backendPythonLineEdit").setText("/opt/photon-env/bin/python")
    for name in ("backendUrlLabel", "backendUrlLineEdit", "backendTokenLabel", "backendTokenLineEdit", "connectButton"):
        child(QWidget, name).setVisible(False)  # Local mode hides the remote fields, as the module does
    child(QWidget, "startBackendButton").setEnabled(False)
    child(QWidget, "stopBackendButton").setEnabled(True)
    server = wording.server_text({"model": {"name": result["model"], "device": "cpu"}})
    child(QLabel, "backendStatusLabel").setText(f"Ready: {server} at http://127.0.0.1:8765.")
    volume = child(QComboBox, "inputVolumeSelector")
    volume.clear()
    volume.addItem("phantom_ct")
    examples = child(QComboBox, "exampleQuestionsComboBox")
    examples.clear()
    examples.addItems(wording.example_items())
    child(QTextEdit, "questionTextEdit").setPlainText(QUESTION)
    child(QSpinBox, "maxNewTokensSpinBox").setValue(256)
    child(QWidget, "askButton").setEnabled(True)
    child(QProgressBar, "askProgressBar").setRange(0, 256)
    child(QPlainTextEdit, "answerTextEdit").setPlainText(wording.answer_text(result["answer"], False))
    child(QLabel, "tokensKeptLabel").setText(wording.tokens_text(result["tokens_kept"], result["tokens_total"]))
    child(QLabel, "timingsLabel").setText(wording.timings_text(result["timings"]))
    child(QWidget, "jumpToMostKeptButton").setEnabled(True)
    colours = child(QComboBox, "heatmapColorSelector")
    colours.clear()
    colours.addItem("PET-Heat")
    model = QStandardItemModel(0, 5)
    model.setHorizontalHeaderLabels(["time", "question", "answer", "status", "tokens kept"])
    rows = [
        ("10:02:11", FIRST_QUESTION, first["answer"], "answered", str(first["tokens_kept"])),
        ("10:03:40", QUESTION, result["answer"], "answered", str(result["tokens_kept"])),
    ]
    for row in rows:
        model.appendRow([QStandardItem(value) for value in row])
    table = child(QTableView, "historyTableView")
    table.setModel(model)
    table.selectRow(1)
    table.resizeColumnsToContents()


def compose(panel_image, overlay_rgb, output: Path) -> None:
    from PySide6.QtCore import QRect, Qt
    from PySide6.QtGui import QColor, QFont, QImage, QPainter

    height, width, _ = overlay_rgb.shape
    overlay = QImage(overlay_rgb.data, width, height, 3 * width, QImage.Format_RGB888).copy()
    view_width = 900
    overlay = overlay.scaledToWidth(view_width, Qt.SmoothTransformation)
    margin, caption_height = 12, 64
    canvas_width = panel_image.width() + view_width + 3 * margin
    canvas_height = max(panel_image.height(), overlay.height() + 40) + 2 * margin + caption_height
    canvas = QImage(canvas_width, canvas_height, QImage.Format_RGB888)
    canvas.fill(QColor(40, 40, 40))
    painter = QPainter(canvas)
    painter.drawImage(margin, margin, panel_image)
    view_left = panel_image.width() + 2 * margin
    painter.setPen(QColor(230, 230, 230))
    painter.setFont(QFont("Sans", 11))
    painter.drawText(view_left, margin + 18, "Slice views: phantom_ct (synthetic, liver lesion) with the Photon heatmap (kept tokens) overlaid")
    painter.drawImage(view_left, margin + 32, overlay)
    painter.setFont(QFont("Sans", 10))
    painter.setPen(QColor(200, 200, 120))
    caption = (
        "Composed rendering, not a Slicer screen capture: the module's .ui drawn by PySide6 offscreen, next to "
        "three slices drawn by photonlib.inference.overlay. Answers, heatmap, token counts and timings come from real "
        "'photon ask' runs of the embedded demo model (trained on CPU on synthetic phantoms) on a phantom it never saw."
    )
    painter.drawText(
        QRect(margin, canvas_height - caption_height, canvas_width - 2 * margin, caption_height - margin),
        Qt.TextWordWrap | Qt.AlignLeft | Qt.AlignVCenter,
        caption,
    )
    painter.end()
    output.parent.mkdir(parents=True, exist_ok=True)
    if not canvas.save(str(output)):
        raise OSError(f"could not write {output}")


def main() -> int:
    from PySide6.QtWidgets import QApplication
    from ui_stand_ins import load_panel

    application = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory() as folder:
        volume_path = write_phantom(Path(folder))
        heatmap_path = Path(folder) / "heatmap.nrrd"
        first = run_photon_ask(volume_path, FIRST_QUESTION)
        result = run_photon_ask(volume_path, QUESTION, heatmap_path)
        overlay = overlay_picture(volume_path, heatmap_path)
    panel = load_panel(UI_FILE)
    fill_panel(panel, first, result)
    panel.resize(400, 1040)
    panel.show()
    application.processEvents()
    compose(panel.grab().toImage(), overlay, OUTPUT)
    print(f"wrote {OUTPUT.relative_to(REPOSITORY_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
