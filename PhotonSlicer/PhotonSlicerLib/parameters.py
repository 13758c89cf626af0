"""The parameter node of the PhotonSlicer panel and how its widgets are bound to it.

Runs inside Slicer only (Slicer's ``parameterNodeWrapper`` and GUI connectors, ``qt``); the
harness of ``Testing/photonslicer_tests/slicer_harness.py`` runs it on each supported release's own package.
"""

from __future__ import annotations

import enum
from typing import Annotated, Union

import qt
from slicer import vtkMRMLColorTableNode, vtkMRMLPETProceduralColorNode, vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.parameterNodeWrapper.guiConnectors import QLineEditToStrConnector, QTextEditPlainTextToStrConnector

from . import display
from .backend import DEFAULT_URL


class BackendMode(enum.Enum):
    LOCAL = "local"
    REMOTE = "remote"

    def label(self) -> str:
        """Text in the Backend combo box (parameterNodeWrapper shows enums by this)."""
        return {"local": _("Local (this computer)"), "remote": _("Remote URL")}[self.value]


@parameterNodeWrapper
class PhotonSlicerParameterNode:
    """What the panel shows, saved with the scene. No token: tokens live in memory only.

    inputVolume - the volume to ask about.
    question - the question box.
    maxNewTokens - the longest answer asked for.
    backendMode - local (bundled backend started here) or remote URL.
    backendUrl - the remote backend's address.
    showHeatmap, heatmapOpacity, heatmapThreshold, heatmapColor - how the heatmap is shown.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    question: str = ""
    maxNewTokens: Annotated[int, WithinRange(8, 1024)] = 256
    backendMode: BackendMode = BackendMode.LOCAL
    backendUrl: str = DEFAULT_URL
    showHeatmap: bool = True
    heatmapOpacity: Annotated[float, WithinRange(0.0, 1.0)] = display.DEFAULT_OPACITY
    heatmapThreshold: Annotated[float, WithinRange(0.0, 1.0)] = display.DEFAULT_THRESHOLD
    # typing.Union, not "|": Slicer's node combo box connector recognises only typing.Union.
    heatmapColor: Union[vtkMRMLColorTableNode, vtkMRMLPETProceduralColorNode, None]  # noqa: UP007


class KeepCursorLineEditConnector(QLineEditToStrConnector):
    """Slicer's line edit connector, writing the text only when it differs from the widget's.

    Slicer writes every parameter back to its widget after each change; ``setText`` moves the
    cursor to the end, so on Slicer 5.6/5.8 typing in the middle of the URL jumped to its end.
    """

    def write(self, value: str) -> None:
        if value != self._widget.text:
            super().write(value)


class KeepCursorTextEditConnector(QTextEditPlainTextToStrConnector):
    """Slicer's text edit connector, writing the text only when it differs from the widget's.

    ``setPlainText`` puts the cursor at the start: with every keystroke written back (all
    Slicer releases), "Is there a lesion?" was typed as "?noisel a ereht sI".
    """

    def write(self, value: str) -> None:
        if value != self._widget.toPlainText():
            super().write(value)


def connectParameterNodeToGui(parameterNode, ui) -> int:
    """Bind every widget of ``ui`` with a ``SlicerParameterName`` to ``parameterNode``; returns the tag.

    Like ``parameterNode.connectGui(ui)``, with two differences: text widgets use the
    connectors above, and the tag for ``disconnectGui`` is always returned (``connectGui``
    returns None on Slicer 5.6/5.8, so a binding could never be released and they piled up
    with every ``enter()``).
    """
    mapping = {}
    for widget in vars(ui).values():
        name = widget.property("SlicerParameterName") if hasattr(widget, "property") else None
        if not name:
            continue
        if type(widget) == qt.QTextEdit:  # noqa: E721  (exact type, as Slicer's connectors check it)
            mapping[name] = KeepCursorTextEditConnector(widget)
        elif type(widget) == qt.QLineEdit:  # noqa: E721
            mapping[name] = KeepCursorLineEditConnector(widget)
        else:
            mapping[name] = widget
    return parameterNode.connectParametersToGui(mapping)
