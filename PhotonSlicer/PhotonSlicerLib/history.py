"""The question history of a volume, kept in a vtkMRMLTableNode so it is saved with the scene.

One table per input volume, found through a node reference from the volume. Each row is
one question: time, question, answer, status (answered, or cancelled when the answer was
stopped part-way and is partial), tokens kept, tokens total, model, heatmap node id.
The token is never written here (nor anywhere else).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import slicer
import vtk

HISTORY_REFERENCE_ROLE = "PhotonHistory"
ANSWERED, CANCELLED = "answered", "cancelled"
#: (column name, vtk array class): token counts are integers so they sort and plot as numbers.
COLUMNS = (
    ("time", vtk.vtkStringArray),
    ("question", vtk.vtkStringArray),
    ("answer", vtk.vtkStringArray),
    ("status", vtk.vtkStringArray),
    ("tokens kept", vtk.vtkIntArray),
    ("tokens total", vtk.vtkIntArray),
    ("model", vtk.vtkStringArray),
    ("heatmap node id", vtk.vtkStringArray),
)
COLUMN_NAMES = tuple(name for name, _ in COLUMNS)


@dataclass(frozen=True)
class HistoryEntry:
    time: str
    question: str
    answer: str
    status: str
    tokens_kept: int
    tokens_total: int
    model: str
    heatmap_node_id: str

    @property
    def cancelled(self) -> bool:
        """The answer was stopped part-way (Cancel): what is stored is partial."""
        return self.status == CANCELLED


def create_history_table(scene, name: str):
    """An empty history table node with the columns above, added to the scene."""
    table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(name))
    # Column names as the header: Slicer 5.8 renamed SetUseColumnNameAsColumnHeader (5.6) to
    # SetUseColumnTitleAsColumnHeader and deprecated the old name; call the one this Slicer has.
    set_header = getattr(table_node, "SetUseColumnTitleAsColumnHeader", None)
    (set_header or table_node.SetUseColumnNameAsColumnHeader)(True)
    table = table_node.GetTable()
    for column_name, array_class in COLUMNS:
        column = array_class()
        column.SetName(column_name)
        table.AddColumn(column)
    table_node.Modified()
    return table_node


def history_table(volume_node, create: bool = True):
    """The history table of a volume (created on first use when ``create``), or None."""
    table_node = volume_node.GetNodeReference(HISTORY_REFERENCE_ROLE)
    if table_node is None and create:
        table_node = create_history_table(volume_node.GetScene(), f"{volume_node.GetName()} Photon history")
        volume_node.SetNodeReferenceID(HISTORY_REFERENCE_ROLE, table_node.GetID())
    return table_node


def add_entry(table_node, question: str, answer: str, tokens_kept: int, tokens_total: int, model: str,
              heatmap_node_id: str = "", time: str | None = None, *, cancelled: bool = False) -> int:  # fmt: skip
    """Append one question (``cancelled``: the answer is partial); returns its row index."""
    time = time or datetime.datetime.now().isoformat(timespec="seconds")
    status = CANCELLED if cancelled else ANSWERED
    values = (time, question, answer, status, int(tokens_kept), int(tokens_total), model, heatmap_node_id or "")
    table = table_node.GetTable()
    row = table.GetNumberOfRows()
    for (column_name, _), value in zip(COLUMNS, values):
        column = table.GetColumnByName(column_name)
        if isinstance(value, int):
            column.InsertNextValue(value)
        else:
            column.InsertNextValue(str(value))
    table.Modified()
    table_node.Modified()
    return row


def entries(table_node) -> list[HistoryEntry]:
    """All rows, oldest first."""
    table = table_node.GetTable()
    rows = []
    for row in range(table.GetNumberOfRows()):
        values = []
        for name in COLUMN_NAMES:
            column = table.GetColumnByName(name)
            # Tables saved before the status column existed hold complete answers only.
            values.append(column.GetValue(row) if column is not None else ANSWERED)
        rows.append(HistoryEntry(*[v if isinstance(v, int) else str(v) for v in values]))
    return rows


def heatmap_node_of_row(table_node, row: int):
    """The heatmap node a history row points to, or None if it was deleted."""
    entry = entries(table_node)[row]
    scene = table_node.GetScene()
    return scene.GetNodeByID(entry.heatmap_node_id) if entry.heatmap_node_id and scene is not None else None


def conversation(table_node, limit: int = 0) -> list[tuple[str, str]]:
    """Earlier (question, answer) turns, for backends that take a conversation history."""
    turns = [(entry.question, entry.answer) for entry in entries(table_node)]
    return turns[-limit:] if limit else turns


_ = slicer  # the table lives in a Slicer scene; imported so a missing slicer fails here, clearly
