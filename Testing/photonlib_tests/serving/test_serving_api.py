"""``photon serve`` against a real uvicorn server on 127.0.0.1, driven by ``photonlib.client``:
round trip with exact heatmap geometry, the prepared-volume cache, cancel, queue, timeouts."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import torch

from photonlib.client import (
    InvalidRequestError,
    JobFailedError,
    NotFoundError,
    PhotonClient,
    RequestTimeoutError,
    ServerBusyError,
    ServerError,
)
from photonlib.inference import PhotonEngine
from photonlib.volume import map_to_source, read_volume, write_volume
from photonlib.volume.image import Volume
from photonlib.wire import read_nrrd_bytes

from support.serving import (
    LONG_ANSWER,
    WAIT_S,
    ct_array,
    oblique_geometry,
    running_server,
    tiny_engine,
    wait_for_tokens,
    wait_until,
)


@pytest.fixture(scope="module")
def server():
    with running_server() as running:
        yield running


@pytest.fixture
def client(server):
    return PhotonClient(server.url, timeout=20)


def count_vision_tower_calls(engine):
    calls = []
    handle = engine.model.model.visual.register_forward_hook(lambda *_: calls.append(1))
    return calls, handle


def test_health_and_info(client):
    health = client.health()
    assert health == {"status": "ok", "version": health["version"], "api_version": "1", "auth_required": False}
    info = client.check_server()
    assert info["model"]["name"] == "photon-tiny-random"
    assert info["model"]["device"] == "cpu" and info["model"]["tokens_total"] == 64
    assert len(info["model"]["version"]) == 12
    assert info["limits"]["max_upload_bytes"] == 1024 * 2**20
    assert info["queue"]["running"] in (0, 1)


def test_ask_round_trip_heatmap_in_the_volume_geometry(client, tmp_path):
    geometry = oblique_geometry()
    array = ct_array(geometry)
    uploaded = client.upload_array(array, geometry)
    assert uploaded.uploaded and uploaded.geometry.isclose(geometry, atol_mm=1e-9)

    progress = []
    result = client.ask(uploaded.volume_id, "Is there a lesion?", max_new_tokens=6, poll_interval=0.02, on_progress=progress.append, timeout=WAIT_S)

    assert result.status == "done" and not result.stopped
    assert result.tokens_total == 64 and 0 <= result.tokens_kept <= 64 and result.tokens_generated == 6
    assert set(result.timings) == {"preprocess", "vision", "prefill", "decode", "total", "queued"}
    assert result.model["name"] == "photon-tiny-random"
    assert progress and progress[-1].status == "done"
    heatmap, heatmap_geometry = result.heatmap()
    assert heatmap.shape == array.shape and heatmap.dtype == np.float32
    assert heatmap_geometry.isclose(geometry, atol_mm=1e-9, atol_direction=1e-12)

    # The same numbers as the engine computes here for the same volume and question.
    engine = tiny_engine()
    case = engine.prepare(Volume(array=array, geometry=geometry, source_format="raw"))
    local = engine.ask(case, "Is there a lesion?", max_new_tokens=6)
    np.testing.assert_allclose(heatmap, map_to_source(local.keep_probability, case.prepared), atol=1e-6)
    assert result.tokens_kept == local.tokens_kept

    # The NRRD the server sends is a standard one: SimpleITK reads the same voxels and geometry.
    path = tmp_path / "heatmap.nrrd"
    path.write_bytes(result.heatmap_nrrd())
    read_back = read_volume(path)
    assert read_back.geometry.isclose(geometry, atol_mm=1e-9, atol_direction=1e-12)
    np.testing.assert_array_equal(read_back.array, heatmap)


def test_second_question_skips_preprocessing_and_the_vision_tower(client, server):
    engine = tiny_engine()
    geometry = oblique_geometry((24, 20, 12))
    uploaded = client.upload_array(ct_array(geometry, seed=3), geometry)
    calls, handle = count_vision_tower_calls(engine)
    try:
        first_started = time.perf_counter()
        first = client.ask(uploaded.volume_id, "Where is the lesion?", max_new_tokens=4, poll_interval=0.01, timeout=WAIT_S)
        first_seconds = time.perf_counter() - first_started
        second_started = time.perf_counter()
        second = client.ask(uploaded.volume_id, "How large is it?", max_new_tokens=4, poll_interval=0.01, timeout=WAIT_S)
        second_seconds = time.perf_counter() - second_started
        # A history puts the volume behind an earlier turn: another prefix, nothing reused.
        with_history = client.ask(uploaded.volume_id, "And its density?", history=[("Where is the lesion?", first.answer)], max_new_tokens=4, poll_interval=0.01, timeout=WAIT_S)
    finally:
        handle.remove()

    assert len(calls) == 1, "the vision tower must run once for three questions about one volume"
    assert not first.cache_hit and not first.vision_skipped and first.timings["vision"] > 0 and first.timings["preprocess"] > 0
    assert second.cache_hit and second.vision_skipped
    assert not first.prefix_reused and second.prefix_reused and not with_history.prefix_reused
    assert second.timings["vision"] == 0 and second.timings["preprocess"] == 0
    assert second.timings["total"] < first.timings["total"]
    print(f"\nfirst question {first_seconds:.3f} s (server {first.timings['total']:.3f} s), "
          f"second {second_seconds:.3f} s (server {second.timings['total']:.3f} s)")  # fmt: skip

    # Uploading the same voxels again sends nothing: the client finds the id on the server.
    again = client.upload_array(ct_array(geometry, seed=3), geometry)
    assert again.volume_id == uploaded.volume_id and not again.uploaded
    assert client.volume(uploaded.volume_id)["prepared"] is True
    assert client.volume(uploaded.volume_id)["questions"] == 3


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz", ".nii"])
def test_upload_image_files(client, tmp_path, suffix):
    geometry = oblique_geometry((20, 18, 10))
    array = ct_array(geometry, seed=5)
    path = write_volume(tmp_path / f"ct{suffix}", array, geometry)
    uploaded = client.upload_file(path)
    assert uploaded.geometry.isclose(geometry, atol_mm=1e-4, atol_direction=1e-5)  # NIfTI stores float32
    assert uploaded.info["source_format"] == ("nrrd" if suffix == ".nrrd" else "nifti")
    assert uploaded.info["voxels"] == array.size


def test_inline_ask_for_curl_users(server, tmp_path):
    geometry = oblique_geometry((20, 18, 10))
    path = write_volume(tmp_path / "ct.nrrd", ct_array(geometry, seed=6), geometry)
    response = requests.post(
        f"{server.url}/v1/ask",
        params={"question": "Is it normal?", "max_new_tokens": 3},
        data=path.read_bytes(),
        headers={"Content-Type": "application/octet-stream"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "done" and job["result"]["tokens_generated"] == 3
    heatmap = requests.get(server.url + job["result"]["heatmap_url"], timeout=30)
    assert heatmap.headers["content-type"] == "application/x-nrrd"
    assert read_nrrd_bytes(heatmap.content)[1].isclose(geometry, atol_mm=1e-6)


def test_streaming_events_end_with_the_answer(client, server):
    geometry = oblique_geometry((20, 18, 10))
    uploaded = client.upload_array(ct_array(geometry, seed=7), geometry)
    job = client.submit(uploaded.volume_id, "Describe it.", max_new_tokens=5)
    with requests.get(f"{server.url}/v1/jobs/{job.job_id}/events", stream=True, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines(decode_unicode=True) if line.startswith(("event:", "data:"))]
    assert events[-2] == "event: done"
    assert json.loads(events[-1].removeprefix("data: "))["status"] == "done"


def test_delete_volume_and_unknown_ids(client):
    geometry = oblique_geometry((20, 18, 10))
    uploaded = client.upload_array(ct_array(geometry, seed=8), geometry)
    client.delete_volume(uploaded.volume_id)
    with pytest.raises(NotFoundError, match="upload it again"):
        client.ask(uploaded.volume_id, "Anything?", timeout=WAIT_S)
    with pytest.raises(NotFoundError):
        client.delete_volume(uploaded.volume_id)
    with pytest.raises(NotFoundError):
        client.job("0" * 32)


def test_question_limits_are_checked(client, server):
    geometry = oblique_geometry((20, 18, 10))
    uploaded = client.upload_array(ct_array(geometry, seed=9), geometry)
    with pytest.raises(InvalidRequestError, match="at most 4,000"):
        client.submit(uploaded.volume_id, "x" * 4001)
    with pytest.raises(InvalidRequestError, match="max_new_tokens"):
        client.submit(uploaded.volume_id, "ok?", max_new_tokens=LONG_ANSWER + 1)
    with pytest.raises(InvalidRequestError, match="empty"):
        client.submit(uploaded.volume_id, "   ")
    response = requests.post(f"{server.url}/v1/volumes/{uploaded.volume_id}/questions", data="not json", timeout=10)
    assert response.status_code == 422 and response.json()["code"] == "invalid_request"


def test_cancel_a_running_question(client):
    geometry = oblique_geometry((20, 18, 10))
    uploaded = client.upload_array(ct_array(geometry, seed=10), geometry)
    job = client.submit(uploaded.volume_id, "Tell me everything.", max_new_tokens=LONG_ANSWER)
    wait_for_tokens(client, job.job_id, 2)
    cancelled_at = time.monotonic()
    assert client.cancel(job.job_id).raw["cancel_requested"]
    result = client.wait(job.job_id, poll_interval=0.01, timeout=20)
    assert time.monotonic() - cancelled_at < 5
    assert result.status == "cancelled" and result.stopped
    assert 2 < result.tokens_generated < LONG_ANSWER
    assert result.heatmap()[0].shape == geometry.array_shape  # prefill ran: the heatmap exists


def test_full_queue_answers_503_with_retry_after():
    with running_server(queue_size=1, retry_after_s=3) as server:
        client = PhotonClient(server.url, timeout=20)
        geometry = oblique_geometry((20, 18, 10))
        volume_id = client.upload_array(ct_array(geometry, seed=11), geometry).volume_id
        running = client.submit(volume_id, "first", max_new_tokens=LONG_ANSWER)
        wait_until(lambda: client.job(running.job_id).status == "running", what="the first job running")
        waiting = client.submit(volume_id, "second", max_new_tokens=LONG_ANSWER)
        assert client.job(waiting.job_id).queue_position == 1

        response = requests.post(f"{server.url}/v1/volumes/{volume_id}/questions", json={"question": "third"}, timeout=10)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "3"
        assert response.json()["code"] == "queue_full"
        with pytest.raises(ServerBusyError) as busy:
            client.submit(volume_id, "third")
        assert busy.value.retry_after == 3

        # A cancelled waiting job frees its place at once.
        assert client.cancel(waiting.job_id).status == "cancelled"
        client.cancel(running.job_id)
        assert client.wait(running.job_id, poll_interval=0.01, timeout=WAIT_S).status == "cancelled"
        assert client.ask(volume_id, "now?", max_new_tokens=2, poll_interval=0.01, timeout=WAIT_S).status == "done"


def test_job_timeout_is_a_clear_error():
    with running_server(job_timeout_s=0.5) as server:
        client = PhotonClient(server.url, timeout=20)
        geometry = oblique_geometry((20, 18, 10))
        volume_id = client.upload_array(ct_array(geometry, seed=12), geometry).volume_id
        with pytest.raises(RequestTimeoutError, match="timed out after 0.5 s"):
            client.ask(volume_id, "Take your time.", max_new_tokens=LONG_ANSWER, poll_interval=0.02, timeout=WAIT_S)
        assert client.health()["status"] == "ok"


@pytest.mark.parametrize("failure", [torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"), MemoryError()])
def test_out_of_memory_becomes_a_job_error_and_the_server_goes_on(client, monkeypatch, failure):
    engine = tiny_engine()
    geometry = oblique_geometry((20, 18, 10))
    volume_id = client.upload_array(ct_array(geometry, seed=13), geometry).volume_id

    def out_of_memory(*args, **kwargs):
        raise failure

    monkeypatch.setattr(engine, "ask", out_of_memory)
    with pytest.raises(JobFailedError, match="out of .* memory") as failed:
        client.ask(volume_id, "Big question", poll_interval=0.01, timeout=WAIT_S)
    assert failed.value.code == "out_of_memory"
    monkeypatch.undo()
    assert client.ask(volume_id, "Small question", max_new_tokens=2, poll_interval=0.01, timeout=WAIT_S).status == "done"


def test_cache_is_bounded_and_evicts_least_recently_used():
    with running_server(cache_entries=2) as server:
        client = PhotonClient(server.url, timeout=20)
        geometry = oblique_geometry((20, 18, 10))
        ids = [client.upload_array(ct_array(geometry, seed=20 + n), geometry).volume_id for n in range(3)]
        with pytest.raises(NotFoundError):
            client.volume(ids[0])
        assert client.volume(ids[2])["volume_id"] == ids[2]
        stats = client.info()["cache"]
        assert stats["entries"] == 2 and stats["evictions"] == 1


# ------------------------------------------------------------------ a model call that raises or hangs
class BrokenUpgradeEngine(PhotonEngine):
    """The real tiny engine, except that questions starting with "fail" raise as the model did
    under an incompatible transformers release."""

    def ask(self, case, question, *args, **kwargs):
        if question.startswith("fail"):
            raise TypeError("PhotonTextOutput.__init__() got an unexpected keyword argument 'cache'")
        return super().ask(case, question, *args, **kwargs)


class StuckEngine(PhotonEngine):
    """The real tiny engine, except that every answer first blocks until ``release`` is set."""

    release = threading.Event()

    def ask(self, *args, **kwargs):
        self.release.wait(2 * WAIT_S)
        return super().ask(*args, **kwargs)


def engine_like(kind: type[PhotonEngine]) -> PhotonEngine:
    base = tiny_engine()
    return kind(base.model, base.processor, base.name, "cpu")


def test_a_question_whose_model_call_raises_fails_at_once_and_the_server_goes_on():
    with running_server(engine_like(BrokenUpgradeEngine)) as server:
        client = PhotonClient(server.url, timeout=20)
        geometry = oblique_geometry((20, 18, 10))
        volume_id = client.upload_array(ct_array(geometry, seed=30), geometry).volume_id
        failing = client.submit(volume_id, "fail, please", max_new_tokens=5)
        queued_behind = client.submit(volume_id, "And this one?", max_new_tokens=2)
        started = time.monotonic()
        with pytest.raises(JobFailedError) as failed:
            client.wait(failing.job_id, poll_interval=0.01, timeout=WAIT_S)
        assert time.monotonic() - started < 5
        assert failed.value.code == "internal"
        message = str(failed.value)
        assert "TypeError: PhotonTextOutput.__init__() got an unexpected keyword argument 'cache'" in message
        assert "the server keeps running" in message
        progress = client.job(failing.job_id)
        assert (progress.status, progress.stage) == ("error", "finished")

        # The worker survived: the question queued behind it and a new one are answered.
        assert client.wait(queued_behind.job_id, poll_interval=0.01, timeout=WAIT_S).status == "done"
        assert client.ask(volume_id, "Still there?", max_new_tokens=2, poll_interval=0.01, timeout=WAIT_S).status == "done"
        assert client.health()["status"] == "ok"


def test_a_failing_worker_strands_no_queued_question(monkeypatch):
    """A bug in the worker's own bookkeeping ends it loudly: waiting questions fail, new ones are refused."""
    with running_server() as server:
        worker = server.service.worker
        original = worker._forget_old_jobs

        def broken_in_the_worker():
            if threading.current_thread().name == "photon-worker":
                raise RuntimeError("bookkeeping bug")
            original()

        client = PhotonClient(server.url, timeout=20)
        geometry = oblique_geometry((20, 18, 10))
        volume_id = client.upload_array(ct_array(geometry, seed=31), geometry).volume_id
        running = client.submit(volume_id, "first", max_new_tokens=LONG_ANSWER)
        wait_for_tokens(client, running.job_id, 0)
        waiting = client.submit(volume_id, "second", max_new_tokens=2)
        monkeypatch.setattr(worker, "_forget_old_jobs", broken_in_the_worker)
        client.cancel(running.job_id)

        with pytest.raises(JobFailedError, match="worker failed .*RuntimeError: bookkeeping bug.*restart photon serve"):
            client.wait(waiting.job_id, poll_interval=0.01, timeout=WAIT_S)
        assert client.health()["status"] == "unavailable"
        with pytest.raises(ServerError, match="answers no more questions.*restart photon serve") as refused:
            client.submit(volume_id, "third")
        assert refused.value.status == 503 and refused.value.code == "worker_stopped"


def test_a_model_call_that_never_returns_does_not_keep_the_client_waiting():
    engine = engine_like(StuckEngine)
    engine.release = threading.Event()
    try:
        with running_server(engine, job_timeout_s=0.5) as server:
            client = PhotonClient(server.url, timeout=20)
            geometry = oblique_geometry((20, 18, 10))
            volume_id = client.upload_array(ct_array(geometry, seed=32), geometry).volume_id
            started = time.monotonic()
            with ThreadPoolExecutor(1) as pool:  # no client timeout: the server's job timeout bounds it
                waiting = pool.submit(client.ask, volume_id, "Anything?", max_new_tokens=2, poll_interval=0.05)
                with pytest.raises(RequestTimeoutError, match="seems stuck: restart photon serve"):
                    waiting.result(timeout=WAIT_S)
            assert time.monotonic() - started < 2 * 0.5 + 5 + 3
            engine.release.set()
    finally:
        engine.release.set()
