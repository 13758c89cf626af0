"""A busy ``photon serve`` (HTTP 503 with ``Retry-After``): the client waits for it within its
budget (``busy_wait_s``), can be cancelled while it waits, and without the wait raises
``ServerBusyError`` at once. Real servers on 127.0.0.1, real clients in threads."""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import pytest

from photonlib.cli.main import main
from photonlib.client import PhotonClient, RequestCancelledError, ServerBusyError, ServerError
from photonlib.volume import write_volume

from support.serving import LONG_ANSWER, WAIT_S, ct_array, oblique_geometry, running_server, wait_for_tokens, wait_until

CLIENTS = 12
QUEUE = 4
#: Tokens of each answer when twelve clients ask together: about 0.3 s a question on 2 CPU cores,
#: so twelve sent at once overflow the one running and the four waiting (seven are refused).
ANSWER_TOKENS = 40


def uploaded_volume(client: PhotonClient, seed: int) -> str:
    geometry = oblique_geometry((20, 18, 10))
    return client.upload_array(ct_array(geometry, seed=seed), geometry).volume_id


def fill_the_queue(client: PhotonClient, volume_id: str) -> list[str]:
    """One job running and one waiting (a server started with ``queue_size=1``): the next is refused."""
    running = client.submit(volume_id, "first", max_new_tokens=LONG_ANSWER)
    wait_for_tokens(client, running.job_id, 0)
    waiting = client.submit(volume_id, "second", max_new_tokens=LONG_ANSWER)
    return [running.job_id, waiting.job_id]


def ask_together(url: str, volume_id: str, count: int, **client_options):
    """``count`` clients, one thread each, ask at the same moment: (results, errors, busy waits) by client."""
    barrier = threading.Barrier(count)
    results, errors, waits = {}, {}, {index: [] for index in range(count)}

    def ask(index: int) -> None:
        client = PhotonClient(url, timeout=20, **client_options)
        try:
            barrier.wait(WAIT_S)
            results[index] = client.ask(
                volume_id, f"Question {index}?", max_new_tokens=ANSWER_TOKENS, poll_interval=0.05, timeout=WAIT_S,
                on_busy=waits[index].append,
            )  # fmt: skip
        except Exception as error:  # noqa: BLE001 - the test inspects it
            errors[index] = error

    threads = [threading.Thread(target=ask, args=(index,), daemon=True) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a client was still asking after 60 s"
    return results, errors, waits


def test_twelve_clients_of_a_queue_of_four_all_get_answers_when_they_wait():
    with running_server(queue_size=QUEUE, retry_after_s=1) as server:
        client = PhotonClient(server.url, timeout=20)
        volume_id = uploaded_volume(client, seed=40)
        # Prepared once (vision tower): every question then costs its tokens only.
        assert client.ask(volume_id, "Warm up?", max_new_tokens=2, poll_interval=0.01, timeout=WAIT_S).status == "done"

        # Without the wait (the client's default), the questions the queue cannot hold are refused.
        results, errors, waits = ask_together(server.url, volume_id, CLIENTS)
        assert errors, "twelve questions at once fitted in a queue of four: the test no longer fills it"
        assert len(results) + len(errors) == CLIENTS and not any(waits.values())
        assert all(isinstance(error, ServerBusyError) and error.code == "queue_full" for error in errors.values()), (
            errors
        )

        # With it, every client gets its answer: each refused one waits Retry-After (plus jitter) and asks again.
        started = time.monotonic()
        results, errors, waits = ask_together(server.url, volume_id, CLIENTS, busy_wait_s=WAIT_S)
        assert not errors, errors
        assert len(results) == CLIENTS and all(
            result.status == "done" and not result.stopped for result in results.values()
        )
        assert time.monotonic() - started < WAIT_S
        delays = [wait.delay_s for client_waits in waits.values() for wait in client_waits]
        assert delays, "no client was refused: the test no longer fills the queue"
        assert all(wait.code == "queue_full" for client_waits in waits.values() for wait in client_waits)
        assert all(1.0 <= delay <= 1.25 for delay in delays), delays  # Retry-After: 1, jitter up to 25 %
        assert len(set(delays)) > 1  # spread out, not in lockstep
        assert server.service.worker.stats()["waiting"] == 0


def test_a_server_busy_for_longer_than_the_budget_raises_saying_how_long_the_client_waited():
    with running_server(queue_size=1, retry_after_s=5) as server:
        client = PhotonClient(server.url, timeout=20)
        volume_id = uploaded_volume(client, seed=41)
        blockers = fill_the_queue(client, volume_id)

        started = time.monotonic()
        with pytest.raises(ServerBusyError) as at_once:  # the default: no wait at all
            client.submit(volume_id, "third")
        assert time.monotonic() - started < 2
        assert at_once.value.waited_s == 0 and at_once.value.retry_after == 5 and "waited" not in str(at_once.value)

        waits = []
        patient = PhotonClient(server.url, timeout=20, busy_wait_s=1.0)
        started = time.monotonic()
        with pytest.raises(ServerBusyError) as exhausted:
            patient.submit(volume_id, "third", on_busy=waits.append)
        elapsed = time.monotonic() - started
        # Retry-After says 5 s, but the client waits only what is left of its 1 s, then tries once more.
        assert 1.0 <= elapsed < 3.0, elapsed
        assert [(wait.attempt, wait.delay_s, wait.limit_s, wait.code) for wait in waits] == [
            (1, 1.0, 1.0, "queue_full")
        ]
        error = exhausted.value
        assert error.code == "queue_full" and error.retry_after == 5 and 1.0 <= error.waited_s < 3.0
        assert re.search(r"waited \d\.\d s for the server to accept it \(busy_wait_s=1\)", str(error)), str(error)
        assert "--queue" in str(error)
        assert len(server.service.worker._jobs) == 2  # no refused try became a job
        for job_id in blockers:
            client.cancel(job_id)


def test_a_stopped_worker_is_not_waited_for():
    """503 worker_stopped is permanent: an error at once, however long the client may wait."""
    with running_server() as server:
        client = PhotonClient(server.url, timeout=20, busy_wait_s=WAIT_S)
        volume_id = uploaded_volume(client, seed=42)
        server.service.worker.stop()
        waits = []
        started = time.monotonic()
        with pytest.raises(ServerError, match="restart photon serve") as refused:
            client.submit(volume_id, "Anyone there?", on_busy=waits.append)
        assert refused.value.status == 503 and refused.value.code == "worker_stopped"
        assert not waits and time.monotonic() - started < 2


def test_cancel_while_waiting_for_a_busy_server_stops_at_once_and_creates_nothing():
    with running_server(queue_size=1, retry_after_s=5) as server:
        client = PhotonClient(server.url, timeout=20)
        volume_id = uploaded_volume(client, seed=43)
        blockers = fill_the_queue(client, volume_id)
        patient = PhotonClient(server.url, timeout=20, busy_wait_s=WAIT_S)
        cancel_event, waiting = threading.Event(), threading.Event()
        outcome = {}

        def submit() -> None:
            try:
                outcome["job"] = patient.submit(
                    volume_id, "third", on_busy=lambda wait: waiting.set(), cancel_event=cancel_event
                )
            except BaseException as error:  # noqa: BLE001 - the test inspects it
                outcome["error"] = error

        thread = threading.Thread(target=submit, daemon=True)
        thread.start()
        assert waiting.wait(WAIT_S), f"the client never waited: {outcome}"
        cancelled_at = time.monotonic()
        cancel_event.set()
        thread.join(WAIT_S)
        assert not thread.is_alive(), "the cancelled wait went on"
        assert time.monotonic() - cancelled_at < 1.0  # not the 5 s Retry-After
        assert isinstance(outcome.get("error"), RequestCancelledError), outcome
        assert "nothing was created" in str(outcome["error"])
        assert len(server.service.worker._jobs) == 2
        for job_id in blockers:
            client.cancel(job_id)


def test_cancel_event_of_ask_also_stops_a_question_being_answered():
    with running_server() as server:
        client = PhotonClient(server.url, timeout=20, busy_wait_s=WAIT_S)
        volume_id = uploaded_volume(client, seed=44)
        cancel_event = threading.Event()
        result = client.ask(
            volume_id, "Tell me everything.", max_new_tokens=LONG_ANSWER, poll_interval=0.02, timeout=WAIT_S,
            on_progress=lambda progress: progress.tokens_generated > 2 and cancel_event.set(), cancel_event=cancel_event,
        )  # fmt: skip
        assert result.status == "cancelled" and result.stopped and 2 < result.tokens_generated < LONG_ANSWER


def hold_upload_slots(url: str, count: int = 2) -> list[socket.socket]:
    """Uploads that send their head and a few bytes, then nothing: each holds one of the server's upload slots."""
    host, port = url.removeprefix("http://").split(":")
    head = (
        f"POST /v1/volumes HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/octet-stream\r\n"
        "Content-Length: 100000\r\n\r\nNRRD0004\n"
    ).encode()
    held = []
    for _ in range(count):
        connection = socket.create_connection((host, int(port)), timeout=10)
        connection.sendall(head)
        held.append(connection)
    return held


def test_uploads_refused_while_two_are_received_are_sent_again(tmp_path):
    """503 busy (two uploads under way): the raw upload and the file upload wait, then are sent whole."""
    with running_server() as server:
        held = hold_upload_slots(server.url)
        try:
            wait_until(lambda: server.service.upload_slots.locked(), what="both upload slots taken")
            geometry = oblique_geometry((20, 18, 10))
            path = write_volume(tmp_path / "ct.nrrd", ct_array(geometry, seed=46), geometry)
            uploads = {
                "array": lambda client, on_busy: client.upload_array(
                    ct_array(geometry, seed=45), geometry, on_busy=on_busy
                ),
                "file": lambda client, on_busy: client.upload_file(path, on_busy=on_busy),
            }
            outcome, waits = {}, {name: [] for name in uploads}

            def upload(name: str) -> None:
                try:
                    outcome[name] = uploads[name](
                        PhotonClient(server.url, timeout=20, busy_wait_s=WAIT_S), waits[name].append
                    )
                except BaseException as error:  # noqa: BLE001 - the test inspects it
                    outcome[name] = error

            threads = [threading.Thread(target=upload, args=(name,), daemon=True) for name in uploads]
            for thread in threads:
                thread.start()
            wait_until(lambda: all(waits.values()) or outcome, what="both uploads refused and waiting")
            assert not outcome, outcome
        finally:
            for connection in held:
                connection.close()  # the server drops these uploads and frees their slots
        for thread in threads:
            thread.join(WAIT_S)
        assert not any(thread.is_alive() for thread in threads), "an upload was still waiting"
        for name in uploads:
            assert not isinstance(outcome[name], BaseException), outcome[name]
            assert outcome[name].uploaded, name  # sent whole on the next try (the file opened afresh)
            assert waits[name][0].code == "busy" and 2.0 <= waits[name][0].delay_s <= 2.5  # Retry-After: 2
        assert server.service.store.stats()["entries"] == 2


def test_photon_ask_server_waits_for_a_busy_server_and_says_so(tmp_path, capsys):
    geometry = oblique_geometry((20, 18, 10))
    volume_path = write_volume(tmp_path / "ct.nrrd", ct_array(geometry, seed=47), geometry)
    with running_server(queue_size=1, retry_after_s=1) as server:
        client = PhotonClient(server.url, timeout=20)
        blockers = fill_the_queue(client, uploaded_volume(client, seed=48))
        arguments = ["ask", str(volume_path), "Is there a lesion?", "--server", server.url, "--max-new-tokens", "3"]
        assert main([*arguments, "--busy-wait", "0"]) == 2
        refused = capsys.readouterr().err
        assert "the server is busy" in refused and refused.count("\n") == 1, refused

        release = threading.Timer(1.5, lambda: [client.cancel(job_id) for job_id in blockers])
        release.start()
        try:
            assert main([*arguments, "--json", "--busy-wait", str(WAIT_S)]) == 0
        finally:
            release.cancel()
        captured = capsys.readouterr()
        assert "photon ask: the server is busy (queue_full); asking again in 1 s" in captured.err, captured.err
        assert json.loads(captured.out)["tokens_total"] > 0  # stdout stays one JSON object
