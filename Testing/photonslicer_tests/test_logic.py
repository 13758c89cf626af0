"""PhotonSlicer's logic under plain Python: a real MRML scene (slicer-core) and a real backend.

The backend is ``photonlib.serving`` with the tiny random model on 127.0.0.1 (the serving
tests' helpers); nothing is mocked between the volume node and the HTTP server.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import slicer
import vtk
from PhotonSlicerLib import history, panel, volumes
from PhotonSlicerLib.backend import AskCancelled, BackendError, ClientBackend, connect
from PhotonSlicerLib.logic import PhotonAskLogic
from PhotonSlicerLib.tasks import AskTask

from photonlib.client import PhotonClient

from support.serving import (
    LONG_ANSWER,
    TOKEN,
    ct_array,
    oblique_geometry,
    running_server,
    wait_for_tokens,
)

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = REPOSITORY_ROOT / "PhotonSlicer"

#: The tiny random model never stops on its own: keep answers short so tests are quick.
SHORT = 6


@pytest.fixture
def scene():
    """A fresh scene, installed as slicer.mrmlScene (slicer.util's helpers add nodes there)."""
    slicer.mrmlScene = slicer.vtkMRMLScene()
    yield slicer.mrmlScene
    slicer.mrmlScene.Clear(1)


@pytest.fixture(scope="module")
def server():
    with running_server() as running:
        yield running


def oblique_volume_node(name: str = "CT oblique"):
    geometry = oblique_geometry()
    node = slicer.util.addVolumeFromArray(ct_array(geometry), ijkToRAS=geometry.ijk_to_ras, name=name)
    return node, geometry


def matrix_of(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------ geometry


def test_volume_node_to_array_and_geometry_keeps_oblique_geometry(scene):
    node, geometry = oblique_volume_node()
    array, read_geometry = volumes.volume_array_and_geometry(node)
    assert array.shape == geometry.array_shape
    assert read_geometry.isclose(geometry, atol_mm=1e-9, atol_direction=1e-9)
    assert read_geometry.is_oblique


def test_heatmap_of_real_backend_has_the_exact_ijk_to_ras_of_an_oblique_volume(scene, server):
    node, geometry = oblique_volume_node()
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    node.SetAndObserveTransformNodeID(transform.GetID())
    logic = PhotonAskLogic()
    logic.connect(server.url)

    answer = logic.ask(node, "Is there a lesion in the liver?", max_new_tokens=SHORT)

    heatmap = answer.heatmap_node
    assert heatmap.IsA("vtkMRMLScalarVolumeNode") and heatmap.GetScene() is scene
    assert np.array_equal(matrix_of(heatmap), matrix_of(node))  # exactly, not approximately
    assert np.array_equal(matrix_of(heatmap), geometry.ijk_to_ras)
    heatmap_array = slicer.util.arrayFromVolume(heatmap)
    assert heatmap_array.shape == slicer.util.arrayFromVolume(node).shape == geometry.array_shape
    assert heatmap_array.dtype == np.float32
    assert 0.0 <= heatmap_array.min() and heatmap_array.max() <= 1.0 and heatmap_array.max() > 0
    assert heatmap.GetTransformNodeID() == transform.GetID()
    assert heatmap.GetDisplayNode().GetWindowLevelMax() == pytest.approx(1.0)  # styled as a probability map
    assert node.GetNodeReference(volumes.HEATMAP_REFERENCE_ROLE) is heatmap
    assert isinstance(answer.answer, str)  # the random tiny model may decode to an empty string
    assert 0 < answer.tokens_kept <= answer.tokens_total
    assert "photon-tiny-random" in answer.model
    # The most-kept position is a voxel centre inside the volume.
    ijk = geometry.ras_to_index(np.array(volumes.most_kept_position_ras(heatmap)))
    assert np.allclose(ijk, np.round(ijk), atol=1e-6) and np.all(ijk >= 0) and np.all(ijk < geometry.size)


def test_heatmap_of_wrong_shape_is_refused(scene):
    node, _ = oblique_volume_node()
    with pytest.raises(ValueError, match="does not match"):
        volumes.add_heatmap_volume(np.zeros((2, 2, 2), np.float32), node)


# ------------------------------------------------------------------------------ history


def test_history_table_records_each_question_and_survives_saving(scene, server, tmp_path):
    node, _ = oblique_volume_node()
    logic = PhotonAskLogic()
    logic.connect(server.url)
    questions = ["Which organ is abnormal?", "Is the lesion larger than 2 cm?"]
    answers = [logic.ask(node, question, max_new_tokens=SHORT) for question in questions]

    table = logic.history_table(node, create=False)
    assert table is not None and table.IsA("vtkMRMLTableNode")
    assert table.GetNumberOfColumns() == len(history.COLUMN_NAMES)
    rows = history.entries(table)
    assert [row.question for row in rows] == questions
    assert [row.answer for row in rows] == [answer.answer for answer in answers]
    assert [(row.tokens_kept, row.tokens_total) for row in rows] == [(a.tokens_kept, a.tokens_total) for a in answers]
    assert all("photon-tiny-random" in row.model and row.time for row in rows)
    assert [history.heatmap_node_of_row(table, i) for i in range(2)] == [a.heatmap_node for a in answers]
    assert answers[1].history_row == 1

    # Saved and read back as the scene would (TSV with a schema keeping the integer columns).
    path = str(tmp_path / "history.tsv")
    storage = table.CreateDefaultStorageNode()
    storage.SetFileName(path)
    assert storage.WriteData(table)
    other_scene = slicer.vtkMRMLScene()
    reread = other_scene.AddNewNodeByClass("vtkMRMLTableNode")
    reader = reread.CreateDefaultStorageNode()
    reader.SetFileName(path)
    assert reader.ReadData(reread)
    assert history.entries(reread) == rows


def test_each_volume_has_its_own_history(scene):
    first, _ = oblique_volume_node("first")
    second, _ = oblique_volume_node("second")
    history.add_entry(history.history_table(first), "q", "a", 1, 2, "m")
    assert history.history_table(second, create=False) is None
    assert history.history_table(first, create=False).GetTable().GetNumberOfRows() == 1


# ------------------------------------------------------------------------------ errors


def test_backend_down_gives_a_clear_message(scene):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(BackendError, match="backend is not running") as caught:
        connect(url)
    assert url in str(caught.value)

    node, _ = oblique_volume_node()
    logic = PhotonAskLogic(backend_factory=ClientBackend)  # no check at connect: fails on ask
    logic.connect(url)
    with pytest.raises(BackendError, match="backend is not running"):
        logic.ask(node, "Anything?")
    assert history.history_table(node, create=False) is None
    assert node.GetNodeReference(volumes.HEATMAP_REFERENCE_ROLE) is None


def test_wrong_token_gives_a_clear_message():
    with running_server(token=TOKEN) as guarded:
        with pytest.raises(BackendError, match="refused the token"):
            connect(guarded.url, "not-the-token")
        assert connect(guarded.url, TOKEN).check()["api_version"]


def test_volume_too_large_gives_a_clear_message(scene):
    node, _ = oblique_volume_node()
    with running_server(max_upload_bytes=1024) as small:
        logic = PhotonAskLogic()
        logic.connect(small.url)
        with pytest.raises(BackendError, match="too large"):
            logic.ask(node, "Anything?")


def test_empty_question_and_non_volume_are_refused(scene, server):
    node, _ = oblique_volume_node()
    logic = PhotonAskLogic()
    logic.connect(server.url)
    with pytest.raises(BackendError, match="Type a question"):
        logic.ask(node, "   ")
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    with pytest.raises(BackendError, match="image data"):
        logic.ask(empty, "Anything?")


def test_module_helpers_never_import_torch():
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import PhotonSlicerLib.logic, PhotonSlicerLib.backend;"
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code, str(MODULE_DIR)], check=True)


def test_cancel_from_another_thread_stops_the_question(scene, server):
    node, _ = oblique_volume_node()
    logic = PhotonAskLogic()
    logic.connect(server.url)
    started = threading.Event()
    outcome = {}

    def ask() -> None:
        try:
            outcome["answer"] = logic.ask(
                node,
                "Describe everything.",
                max_new_tokens=LONG_ANSWER,
                on_progress=lambda text, tokens: tokens and started.set(),
            )
        except BaseException as error:  # noqa: BLE001 - reported by the test below
            outcome["error"] = error

    worker = threading.Thread(target=ask)
    worker.start()
    deadline = time.monotonic() + 30
    while not started.wait(0.05):  # fails at once when the question ends without a token
        error = outcome.get("error")
        assert worker.is_alive(), f"the question ended before any token: {error!r} ({getattr(error, 'detail', '')})"
        assert time.monotonic() < deadline, "no token was generated within 30 s"
    logic.cancel()
    worker.join(20)
    assert not worker.is_alive(), "the cancelled question did not end within 20 s"
    assert "error" not in outcome, outcome
    answer = outcome["answer"]
    assert answer.stopped
    entry = history.entries(logic.history_table(node))[0]
    assert entry.question == "Describe everything." and entry.cancelled and entry.status == history.CANCELLED


# ------------------------------------------------------------------------------ worker thread


def poll_until_finished(task: AskTask, timeout: float = 30.0):
    """What the widget's timer does, without Qt."""
    deadline = time.monotonic() + timeout
    seen = []
    while not (progress := task.poll()).finished:
        seen.append(progress)
        assert time.monotonic() < deadline, "the task never finished"
        time.sleep(0.02)
    return progress, seen


def test_ask_task_runs_off_the_main_thread_and_adds_nodes_on_finish(scene, server):
    node, _ = oblique_volume_node()
    logic = PhotonAskLogic()
    logic.connect(server.url)
    task = AskTask(logic, node, "Is there a fracture?", max_new_tokens=SHORT).start()
    progress, seen = poll_until_finished(task)
    assert progress.state == "done"
    assert history.history_table(node, create=False) is None  # nothing touched the scene from the worker
    answer = task.finish()
    assert np.array_equal(matrix_of(answer.heatmap_node), matrix_of(node))
    assert history.entries(logic.history_table(node))[0].question == "Is there a fracture?"


def test_ask_task_reports_a_down_backend_through_poll_and_finish(scene):
    node, _ = oblique_volume_node()
    logic = PhotonAskLogic(backend_factory=ClientBackend)
    logic.connect(f"http://127.0.0.1:{free_port()}")
    task = AskTask(logic, node, "Anything?").start()
    progress, _ = poll_until_finished(task)
    assert progress.state == "error" and "backend is not running" in progress.error
    with pytest.raises(BackendError, match="backend is not running"):
        task.finish()


def test_ask_task_cancel_returns_the_partial_answer(scene, server):
    node, _ = oblique_volume_node()
    logic = PhotonAskLogic()
    logic.connect(server.url)
    task = AskTask(logic, node, "Describe everything.", max_new_tokens=LONG_ANSWER).start()
    deadline = time.monotonic() + 30
    while (progress := task.poll()).tokens_generated == 0:
        assert not progress.finished, f"the question ended before any token: {progress.state}: {progress.error}"
        assert time.monotonic() < deadline, "no token was generated within 30 s"
        time.sleep(0.02)
    task.cancel()
    progress, _ = poll_until_finished(task)
    assert progress.state == "done" and progress.stopped and progress.cancel_requested
    answer = task.finish()
    assert answer.stopped and answer.tokens_total > 0
    assert history.entries(logic.history_table(node))[0].cancelled  # flagged: the answer is partial


def test_ask_task_cancelled_before_its_worker_runs_asks_nothing(scene, server):
    """The early-cancel race: a cancel that lands before the worker thread reaches the backend is kept."""
    node, _ = oblique_volume_node()
    logic = PhotonAskLogic()
    logic.connect(server.url)
    jobs_before = len(server.service.worker._jobs)
    task = AskTask(logic, node, "Describe everything.", max_new_tokens=LONG_ANSWER)
    task.cancel()  # before start(): the worst case of "Cancel right after Ask"
    task.start()
    progress, _ = poll_until_finished(task, timeout=10)
    assert progress.state == "cancelled" and "Cancelled" in progress.error
    assert task.finish() is None
    assert history.history_table(node, create=False) is None
    assert node.GetNodeReference(volumes.HEATMAP_REFERENCE_ROLE) is None
    assert len(server.service.worker._jobs) == jobs_before  # no question reached the server
    # The backend is not left in a cancelled state: the next question is answered in full.
    answer = AskTask(logic, node, "Is there a fracture?", max_new_tokens=SHORT).start()
    progress, _ = poll_until_finished(answer)
    assert progress.state == "done" and not progress.stopped
    assert not answer.finish().stopped
    assert not history.entries(logic.history_table(node))[0].cancelled


def test_client_backend_honours_a_cancel_event_set_between_upload_and_submit(scene, server):
    node, _ = oblique_volume_node()
    array, geometry = volumes.volume_array_and_geometry(node)
    backend = ClientBackend(server.url)
    cancel_event = threading.Event()
    upload = backend.client.upload_array

    def upload_then_cancel(*args, **kwargs):  # the user presses Cancel while the volume uploads
        uploaded = upload(*args, **kwargs)
        cancel_event.set()
        return uploaded

    backend.client.upload_array = upload_then_cancel
    with pytest.raises(AskCancelled):
        backend.ask(array, geometry, "Anything?", cancel_event=cancel_event)


def test_selecting_a_history_row_restores_its_heatmap(scene, server):
    node, _ = oblique_volume_node()
    views = [scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode") for _ in range(3)]
    logic = PhotonAskLogic()
    logic.connect(server.url)
    first = logic.ask(node, "First question?", max_new_tokens=SHORT)
    second = logic.ask(node, "Second question?", max_new_tokens=SHORT)
    assert all(view.GetForegroundVolumeID() == second.heatmap_node.GetID() for view in views)

    assert logic.show_history_row(node, 0, opacity=0.3) is first.heatmap_node
    assert all(view.GetForegroundVolumeID() == first.heatmap_node.GetID() for view in views)
    assert all(view.GetForegroundOpacity() == pytest.approx(0.3) for view in views)
    assert node.GetNodeReference(volumes.HEATMAP_REFERENCE_ROLE) is first.heatmap_node

    scene.RemoveNode(second.heatmap_node)  # the user deleted it: the row stays, nothing is shown
    assert logic.show_history_row(node, 1) is None
    assert all(view.GetForegroundVolumeID() is None for view in views)


def test_connect_check_runs_in_a_background_call_and_explains_failure(server):
    from PhotonSlicerLib.background import BackgroundCall

    good = BackgroundCall(ClientBackend(server.url).check, url=server.url)
    down_url = f"http://127.0.0.1:{free_port()}"
    down = BackgroundCall(ClientBackend(down_url).check, url=down_url)
    assert good.wait(30) and down.wait(30)
    assert good.result()["api_version"]
    with pytest.raises(BackendError, match="backend is not running"):
        down.result()


# ------------------------------------------------------------------------------ a busy backend


def fill_the_queue(url: str) -> tuple[PhotonClient, list[str]]:
    """On a server with ``queue_size=1``: one question running, one waiting, so the next is refused (503)."""
    client = PhotonClient(url, timeout=20)
    geometry = oblique_geometry((20, 18, 10))
    volume_id = client.upload_array(ct_array(geometry, seed=50), geometry).volume_id
    running = client.submit(volume_id, "first", max_new_tokens=LONG_ANSWER)
    wait_for_tokens(client, running.job_id, 0)
    waiting = client.submit(volume_id, "second", max_new_tokens=LONG_ANSWER)
    return client, [running.job_id, waiting.job_id]


def poll_until_waiting(task: AskTask, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while (progress := task.poll()).waiting_s is None:
        assert not progress.finished, f"the question ended without waiting: {progress.state}: {progress.error}"
        assert time.monotonic() < deadline, f"the question did not wait for the busy backend within {timeout:g} s"
        time.sleep(0.02)
    return progress


def test_a_question_waits_for_a_busy_backend_by_default_says_so_and_is_answered(scene):
    with running_server(queue_size=1, retry_after_s=1) as busy:
        client, blockers = fill_the_queue(busy.url)
        node, _ = oblique_volume_node()
        logic = PhotonAskLogic()
        logic.connect(busy.url)
        assert logic.backend.busy_wait_s == 120  # on by default
        task = AskTask(logic, node, "Is there a fracture?", max_new_tokens=SHORT).start()
        progress = poll_until_waiting(task)
        text = panel.progress_text(
            progress.tokens_generated, SHORT, progress.cancel_requested, progress.waiting_s, progress.wait_limit_s
        )
        assert text.startswith("Waiting for the server (busy") and text.endswith("of at most 120 s"), text
        for job_id in blockers:  # the other questions end: the waiting one gets its place
            client.cancel(job_id)
        progress, seen = poll_until_finished(task)
        assert progress.state == "done" and not progress.stopped, progress.error
        assert seen[-1].waiting_s is None  # accepted: no longer shown as waiting
        assert task.finish().history_row == 0


def test_cancel_while_waiting_for_a_busy_backend_ends_the_question_at_once(scene):
    with running_server(queue_size=1, retry_after_s=5) as busy:
        client, blockers = fill_the_queue(busy.url)
        node, _ = oblique_volume_node()
        logic = PhotonAskLogic()
        logic.connect(busy.url)
        task = AskTask(logic, node, "Is there a fracture?", max_new_tokens=SHORT).start()
        poll_until_waiting(task)
        cancelled_at = time.monotonic()
        task.cancel()
        progress, _ = poll_until_finished(task, timeout=10)
        assert time.monotonic() - cancelled_at < 2  # not the 5 s the backend asked to wait
        assert progress.state == "cancelled" and "nothing was added" in progress.error
        assert task.finish() is None and history.history_table(node, create=False) is None
        assert len(busy.service.worker._jobs) == 2  # the question never reached the queue
        for job_id in blockers:
            client.cancel(job_id)


def test_a_backend_busy_for_longer_than_the_wait_gives_a_clear_message(scene):
    node, _ = oblique_volume_node()
    array, geometry = volumes.volume_array_and_geometry(node)
    with running_server(queue_size=1, retry_after_s=5) as busy:
        client, blockers = fill_the_queue(busy.url)
        with pytest.raises(BackendError, match=r"stayed busy with other questions for 1 s\. .*Application Settings"):
            ClientBackend(busy.url, busy_wait_s=1).ask(array, geometry, "Anything?", max_new_tokens=SHORT)
        with pytest.raises(BackendError, match=r"busy with other questions\. Try again in a moment \(about 5 s\)"):
            ClientBackend(busy.url, busy_wait_s=0).ask(array, geometry, "Anything?", max_new_tokens=SHORT)
        for job_id in blockers:
            client.cancel(job_id)
