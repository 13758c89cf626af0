"""Asking Photon about a volume node, without any GUI: the body of ``PhotonSlicerLogic``.

Plain Python with ``slicer-core``: usable from Slicer's Python console, from the widget (in
a worker thread for :meth:`PhotonAskLogic.ask_backend`, on the main thread for the MRML part)
and from tests.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

from . import display, history, volumes
from .backend import DEFAULT_URL, Backend, BackendError, PhotonAnswer, ProgressCallback, connect


class PhotonAskLogic:
    """Connects to a backend, sends a volume node and a question, adds the heatmap and the history row.

    Args:
        backend_factory: ``(url, token) -> Backend``; :func:`backend.connect` by default.
    """

    def __init__(self, backend_factory: Callable[[str, str | None], Backend] = connect):
        self.backend_factory = backend_factory
        self.backend: Backend | None = None

    # ------------------------------------------------------------------ backend
    def connect(self, url: str = DEFAULT_URL, token: str | None = None) -> Backend:
        """Connect (and check) a backend; the token is kept in memory only, never saved."""
        self.backend = self.backend_factory(url, token)
        return self.backend

    def cancel(self) -> None:
        """Stop the question being answered (safe from any thread)."""
        if self.backend is not None:
            self.backend.cancel()

    # ------------------------------------------------------------------ asking
    def ask_backend(self, volume_node, question: str, *, max_new_tokens: int | None = None,
                    on_progress: ProgressCallback | None = None,
                    cancel_event: threading.Event | None = None) -> PhotonAnswer:  # fmt: skip
        """The slow part (upload, answer, heatmap download): no scene changes, fine in a worker thread.

        Reading the volume's voxels happens here too; the widget calls :meth:`read_volume` on
        the main thread instead and passes the arrays to the backend itself when it threads.
        """
        array, geometry = self.read_volume(volume_node)
        return self.current_backend().ask(
            array, geometry, question, max_new_tokens=max_new_tokens, on_progress=on_progress,
            cancel_event=cancel_event,
        )  # fmt: skip

    @staticmethod
    def read_volume(volume_node):
        try:
            return volumes.volume_array_and_geometry(volume_node)
        except ValueError as error:
            raise BackendError(str(error)) from error

    def add_result(self, volume_node, question: str, result: PhotonAnswer, *, show: bool = True) -> PhotonAnswer:
        """The MRML part (main thread in Slicer): heatmap node with the volume's geometry (shown over
        the volume in the slice views when ``show``), history row."""
        _, geometry = self.read_volume(volume_node)
        if not volumes.heatmap_matches_volume(result.heatmap_geometry, geometry):
            raise BackendError(
                "The backend's heatmap does not lie on this volume's grid; it was not shown.",
                f"sent {geometry.describe()}, got {result.heatmap_geometry.describe()}",
            )
        heatmap_node = volumes.add_heatmap_volume(result.heatmap_array, volume_node)
        display.style_heatmap(heatmap_node)
        if show:
            display.show_heatmap(volume_node, heatmap_node)
        table_node = history.history_table(volume_node)
        row = history.add_entry(
            table_node,
            question,
            result.answer,
            result.tokens_kept,
            result.tokens_total,
            result.model,
            heatmap_node.GetID(),
            cancelled=result.stopped,
        )
        return dataclasses.replace(result, heatmap_node=heatmap_node, history_row=row)

    def ask(self, volume_node, question: str, *, max_new_tokens: int | None = None,
            on_progress: ProgressCallback | None = None,
            cancel_event: threading.Event | None = None) -> PhotonAnswer:  # fmt: skip
        """Ask and wait (blocks; in the GUI the widget splits this across a worker thread).

        Raises :class:`BackendError` with a message for the user when anything fails
        (:class:`AskCancelled` when cancelled before any answer). An answer cancelled
        part-way is kept, ``stopped``, and flagged ``cancelled`` in the history.
        """
        result = self.ask_backend(
            volume_node, question, max_new_tokens=max_new_tokens, on_progress=on_progress, cancel_event=cancel_event
        )
        return self.add_result(volume_node, question, result)

    def show_history_row(self, volume_node, row: int, opacity: float = display.DEFAULT_OPACITY):
        """Show the heatmap of an earlier question (a selected History row); returns it, or None if deleted."""
        table_node = history.history_table(volume_node, create=False)
        heatmap_node = history.heatmap_node_of_row(table_node, row) if table_node is not None else None
        if heatmap_node is None:
            display.hide_heatmap(volume_node.GetScene())
            return None
        volume_node.SetNodeReferenceID(volumes.HEATMAP_REFERENCE_ROLE, heatmap_node.GetID())
        display.show_heatmap(volume_node, heatmap_node, opacity)
        return heatmap_node

    def history_table(self, volume_node, create: bool = True):
        """The volume's history table node (saved with the scene)."""
        return history.history_table(volume_node, create)

    def current_backend(self) -> Backend:
        """The connected backend; connects to the default local one (no token) if none is."""
        if self.backend is None:
            self.connect()  # the default local backend, no token
        return self.backend
