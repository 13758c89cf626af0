"""``photon serve`` as a user runs it (console script, subprocess), killed while the client is
mid-request: the client must say so clearly and quickly."""

from __future__ import annotations

import threading
import time

import pytest

import photonlib.client as client_module
from photonlib.client import ConnectionLostError, PhotonClient, ServerNotRunningError

from support.models import random_tiny_model
from support.serving import LONG_ANSWER, cli_server, ct_array, oblique_geometry, wait_for_tokens


@pytest.fixture(scope="module")
def saved_tiny_model(tmp_path_factory):
    model, processor = random_tiny_model()
    folder = tmp_path_factory.mktemp("models") / "photon-tiny-saved"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_killed_server_gives_the_client_a_clear_error_quickly(saved_tiny_model, monkeypatch):
    with cli_server("--model", str(saved_tiny_model), "--max-new-tokens", str(LONG_ANSWER)) as server:
        process, url = server.process, server.url
        client = PhotonClient(url, timeout=30)
        assert client.check_server()["model"]["name"] == "photon-tiny-saved"
        geometry = oblique_geometry((20, 18, 10))
        volume_id = client.upload_array(ct_array(geometry), geometry).volume_id
        job = client.submit(volume_id, "Tell me everything.", max_new_tokens=LONG_ANSWER)
        wait_for_tokens(client, job.job_id, 1, server=server)

        # An upload in flight when the server dies: its body trickles (a stand-in for a slow network).
        upload_started = threading.Event()
        original_iter = client_module._RawVolumeBody.__iter__

        def trickle(body):
            for chunk in original_iter(body):
                for start in range(0, len(chunk), 4096):
                    upload_started.set()
                    time.sleep(0.01)
                    yield chunk[start : start + 4096]

        monkeypatch.setattr(client_module._RawVolumeBody, "__iter__", trickle)
        errors: dict[str, BaseException] = {}
        finished_at: dict[str, float] = {}

        def capture(name, call):
            try:
                call()
            except BaseException as error:  # noqa: BLE001 - the test inspects it
                errors[name] = error
            finished_at[name] = time.monotonic()

        other = oblique_geometry((64, 64, 32))  # 256 KiB: over half a second at this pace
        threads = [
            threading.Thread(target=capture, args=("wait", lambda: client.wait(job.job_id, poll_interval=0.05))),
            threading.Thread(target=capture, args=("upload", lambda: PhotonClient(url).upload_array(ct_array(other, 1), other))),
        ]
        for thread in threads:
            thread.start()
        assert upload_started.wait(10), server.report("the second upload never started")
        time.sleep(0.2)
        process.kill()
        killed_at = time.monotonic()
        for thread in threads:
            thread.join(15)
        assert not any(thread.is_alive() for thread in threads), server.report("a client call was still waiting 15 s after the kill")

    assert isinstance(errors["wait"], ConnectionLostError), errors
    assert "stopped answering" in str(errors["wait"]) and "restart photon serve" in str(errors["wait"])
    assert isinstance(errors["upload"], ConnectionLostError), errors
    assert "while uploading" in str(errors["upload"])
    assert max(finished_at.values()) - killed_at < 3.0

    started = time.monotonic()
    with pytest.raises(ServerNotRunningError, match="start one with `photon serve`"):
        PhotonClient(url).health()
    assert time.monotonic() - started < 2.0


def test_a_server_child_that_dies_fails_at_once_with_its_exit_code_and_log():
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="exited with code 2") as failed:
        with cli_server("--max-upload-mb", "lots"):
            pass
    assert "--max-upload-mb" in str(failed.value)  # the child's own last lines
    assert time.monotonic() - started < 30
