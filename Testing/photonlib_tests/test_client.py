"""The client against a server that dies while it sends a response body."""

from __future__ import annotations

import socket
import threading

import pytest

from photonlib.client import API_VERSION, ConnectionLostError, PhotonClient


def test_a_response_cut_short_is_a_lost_connection_not_a_crash():
    """Headers promise 1,000 bytes, then the socket closes: requests raises ChunkedEncodingError,
    which the client must report as ConnectionLostError like any other broken link."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer_once():
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n"
                + f"X-Photon-API-Version: {API_VERSION}\r\n\r\n".encode()
                + b'{"status": "ok", '
            )

    server = threading.Thread(target=answer_once, daemon=True)
    server.start()
    try:
        client = PhotonClient(f"http://127.0.0.1:{port}", timeout=10)
        with pytest.raises(ConnectionLostError, match="connection .* broke"):
            client.health()
    finally:
        server.join(10)
        listener.close()
