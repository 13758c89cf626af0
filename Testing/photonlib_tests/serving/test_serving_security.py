"""Safety of ``photon serve``: tokens, bind address, upload limits before the body is read,
bad volumes answered with 4xx while the server keeps serving, nothing sensitive in the log."""

from __future__ import annotations

import gzip
import json
import logging
import struct
import time

import numpy as np
import pytest
import requests
import SimpleITK as sitk

from photonlib.client import (
    AuthenticationError,
    BadVolumeError,
    PhotonClient,
    VolumeTooLargeError,
)
from photonlib.geometry import VolumeGeometry
from photonlib.serving.settings import (
    MIB,
    UnsafeBindError,
    check_bind_safety,
    is_loopback,
)
from photonlib.volume import ReadLimits, write_volume
from photonlib.wire import encode_raw_volume, raw_volume_header

from support.serving import (
    PHOTON,
    TOKEN,
    WAIT_S,
    ct_array,
    oblique_geometry,
    raw_http,
    running_server,
)


@pytest.fixture(scope="module")
def server():
    with running_server(max_upload_bytes=1 * MIB, read_limits=ReadLimits(max_voxels=200_000), upload_idle_timeout_s=0.5) as running:
        yield running


OCTET_STREAM = {"Content-Type": "application/octet-stream"}


# ---------------------------------------------------------------------------------- auth
def test_with_a_token_every_route_but_health_needs_it(caplog):
    caplog.set_level(logging.DEBUG)
    with running_server(token=TOKEN) as server:
        assert requests.get(f"{server.url}/v1/health", timeout=10).json()["auth_required"] is True
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": f"Basic {TOKEN}"}):
            response = requests.get(f"{server.url}/v1/info", headers=headers, timeout=10)
            assert response.status_code == 401, headers
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert response.json()["code"] == "unauthorized"
        upload = requests.post(f"{server.url}/v1/volumes", data=b"x" * 1000, timeout=10)
        assert upload.status_code == 401  # refused before the body is looked at
        assert requests.get(f"{server.url}/v1/jobs/{'0' * 32}", timeout=10).status_code == 401

        with pytest.raises(AuthenticationError, match="PHOTON_TOKEN"):
            PhotonClient(server.url).info()
        with pytest.raises(AuthenticationError, match="check the token"):
            PhotonClient(server.url, token="wrong-token-0123456789").info()

        client = PhotonClient(server.url, token=TOKEN)
        geometry = oblique_geometry((20, 18, 10))
        volume_id = client.upload_array(ct_array(geometry), geometry).volume_id
        secret_question = "Does patient Jane Q. Example have a lesion?"
        assert client.ask(volume_id, secret_question, max_new_tokens=2, poll_interval=0.01, timeout=WAIT_S).status == "done"

        schema = requests.get(f"{server.url}/openapi.json", timeout=10).json()
        assert "HTTPBearer" in schema["components"]["securitySchemes"]
        assert "security" not in schema["paths"]["/v1/health"]["get"]

    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "GET /v1/info 401" in logged  # the access log works...
    assert TOKEN not in logged and "wrong-token" not in logged  # ...and never shows a token
    assert "Jane" not in logged and "lesion" not in logged  # nor a question
    assert TOKEN not in repr(server.settings) and TOKEN not in repr(client)


def test_without_a_token_the_api_is_open_on_loopback(server):
    assert requests.get(f"{server.url}/v1/info", timeout=10).status_code == 200


def test_web_pages_cannot_reach_a_loopback_server(server, tmp_path):
    """What a browser sends cross-site without asking (DNS rebinding, form-type uploads) is refused."""
    geometry = oblique_geometry((20, 18, 10))
    body = write_volume(tmp_path / "ct.nrrd", ct_array(geometry), geometry).read_bytes()
    rebound = requests.get(f"{server.url}/v1/info", headers={"Host": f"attacker.example:{server.url.rsplit(':', 1)[1]}"}, timeout=10)
    assert rebound.status_code == 400 and rebound.json()["code"] == "bad_host"
    for content_type in (None, "text/plain", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded"):
        headers = {} if content_type is None else {"Content-Type": content_type}
        response = requests.post(f"{server.url}/v1/volumes", data=body, headers=headers, timeout=10)
        assert response.status_code == 415, content_type
        assert "Content-Type: application/octet-stream" in response.json()["detail"]
    for host in ("127.0.0.1", "localhost"):
        port = server.url.rsplit(":", 1)[1]
        assert requests.get(f"{server.url}/v1/health", headers={"Host": f"{host}:{port}"}, timeout=10).status_code == 200
    assert requests.post(f"{server.url}/v1/volumes", data=body, headers=OCTET_STREAM, timeout=10).status_code == 201


def test_bind_rules():
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"):
        assert is_loopback(host)
        check_bind_safety(host, None)
    for host in ("0.0.0.0", "::", "192.168.1.20", "myhost.example.org"):
        assert not is_loopback(host)
        with pytest.raises(UnsafeBindError, match="without a token"):
            check_bind_safety(host, None)
        check_bind_safety(host, TOKEN)
    with pytest.raises(UnsafeBindError, match="at least 16"):
        check_bind_safety("127.0.0.1", "short")


def test_refuses_to_listen_on_all_interfaces_without_a_token(tmp_path):
    import os
    import subprocess

    env = {key: value for key, value in os.environ.items() if key != "PHOTON_TOKEN"}
    started = time.monotonic()
    result = subprocess.run([str(PHOTON), "serve", "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("photon serve: error: refusing to listen on 0.0.0.0")
    assert time.monotonic() - started < 30  # refused before the model is loaded

    weak = tmp_path / "token"
    weak.write_text("1234\n")
    result = subprocess.run([str(PHOTON), "serve", "--host", "0.0.0.0", "--token-file", str(weak)], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2 and "at least 16" in result.stderr


# ---------------------------------------------------------------------------------- upload limits
def test_declared_oversize_upload_is_refused_before_the_body_is_read(server):
    head = (
        f"POST /v1/volumes HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {100 * MIB}\r\n\r\n"
    ).encode()
    started = time.monotonic()
    # The body trickles in; the answer must not wait for it.
    status, _headers, body, sent = raw_http(server.url, head, (b"\0" * 4096 for _ in range(100 * MIB // 4096)))
    assert status == 413
    assert json.loads(body)["code"] == "upload_too_large"
    assert sent < 8 * MIB  # the server answered long before 100 MiB could be sent
    assert time.monotonic() - started < 5


def test_chunked_oversize_upload_is_cut_off_while_streaming(server):
    head = b"POST /v1/volumes HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"10000\r\n" + b"\0" * 0x10000 + b"\r\n"  # 64 KiB chunks, no total length announced
    started = time.monotonic()
    status, _, _, sent = raw_http(server.url, head, (chunk for _ in range(100 * MIB // 0x10000)))
    assert status == 413
    assert MIB <= sent < 12 * MIB  # the limit (1 MiB) was read, not the 100 MiB offered
    assert time.monotonic() - started < 10
    assert requests.get(f"{server.url}/v1/health", timeout=10).json()["status"] == "ok"


def test_the_client_refuses_an_oversize_volume_without_sending_it(server):
    client = PhotonClient(server.url)
    geometry = VolumeGeometry.identity((128, 128, 40))  # 655,360 voxels of float32 = 2.5 MiB
    array = np.random.default_rng(0).normal(size=geometry.array_shape).astype(np.float32)
    before = client.info()["cache"]["entries"]
    with pytest.raises(VolumeTooLargeError, match="at most 1.0 MiB"):
        client.upload_array(array, geometry)
    assert client.info()["cache"]["entries"] == before


def test_a_stalled_upload_times_out(server):
    head = b"POST /v1/volumes HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: 5000\r\n\r\n"
    started = time.monotonic()
    status, _, body, _ = raw_http(server.url, head, [b"NRRD0004\n"])  # then nothing more
    assert status == 408 and b"upload_timeout" in body
    assert time.monotonic() - started < 5


# ---------------------------------------------------------------------------------- bad volumes
def nifti_header(size, datatype=16, bitpix=32) -> bytes:
    """A minimal NIfTI-1 single-file header (352 bytes with the extension flag)."""
    header = bytearray(352)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, len(size), *size, *([1] * (7 - len(size))))
    struct.pack_into("<hh", header, 70, datatype, bitpix)
    struct.pack_into("<8f", header, 76, 1.0, *([1.0] * 7))
    struct.pack_into("<f", header, 108, 352.0)
    header[344:348] = b"n+1\0"
    return bytes(header)


def image_bytes(tmp_path, name, array, geometry=None) -> bytes:
    if geometry is None:
        image = sitk.GetImageFromArray(array)
        sitk.WriteImage(image, str(tmp_path / name))
    else:
        write_volume(tmp_path / name, array, geometry)
    return (tmp_path / name).read_bytes()


def bad_volumes(tmp_path) -> dict[str, tuple[bytes, int, str]]:
    geometry = oblique_geometry((20, 18, 10))
    good = ct_array(geometry)
    nan_array = good.astype(np.float32)
    nan_array[3, 4, 5] = np.nan
    nifti = image_bytes(tmp_path, "ct.nii", good, geometry)
    nifti_gz = image_bytes(tmp_path, "ct.nii.gz", good, geometry)
    raw = b"".join(encode_raw_volume(good, geometry))
    huge = VolumeGeometry.identity((1000, 1000, 1000))
    huge_raw_header = raw_volume_header(np.broadcast_to(np.zeros(1, np.uint8), huge.array_shape), huge)  # no memory
    bomb = gzip.compress(nifti_header((4, 4, 4)) + b"\0" * (30 * MIB), compresslevel=9)
    return {
        "2D image": (image_bytes(tmp_path, "slice.nrrd", np.ones((30, 40), np.int16)), 422, "3D"),
        "single-slice volume": (b"".join(encode_raw_volume(good[:1], VolumeGeometry.identity((20, 18, 1)))), 422, "single voxel"),
        "NaN voxels": (b"".join(encode_raw_volume(nan_array, geometry)), 422, "NaN"),
        "blank volume": (b"".join(encode_raw_volume(np.zeros_like(good), geometry)), 422, "blank"),
        "garbage": (np.random.default_rng(1).bytes(5000), 415, "not a volume format"),
        "truncated NIfTI": (nifti[: len(nifti) // 2], 422, "truncated"),
        "truncated NIfTI gz": (nifti_gz[: len(nifti_gz) // 2], 422, "cut short"),
        "truncated NRRD": (image_bytes(tmp_path, "ct.nrrd", good, geometry)[:-500], 422, "nrrd"),
        "truncated raw": (raw[:-10], 422, "truncated"),
        "raw with a bad header": (b"PHOTONV1" + struct.pack("<I", 5) + b"{oops", 422, "not JSON"),
        "raw with too many voxels": (huge_raw_header + b"\0" * 100, 413, "limit"),
        "NRRD header claiming a huge volume": (b"NRRD0004\ntype: short\ndimension: 3\nsizes: 1000 1000 1000\nendian: little\nencoding: raw\n\n" + b"\0" * 100, 413, "limit"),
        "gzip bomb NIfTI": (bomb, 422, "more data than its header"),
        "detached NRRD reading a server file": (b"NRRD0004\ntype: uchar\ndimension: 3\nsizes: 2 2 2\ndata file: /etc/hostname\nencoding: raw\n\n", 415, "detached"),
        "DICOM file": (b"\0" * 128 + b"DICM" + b"\0" * 200, 415, "DICOM"),
        "empty body": (b"", 400, "empty"),
    }


def test_bad_volumes_are_refused_with_4xx_and_the_server_keeps_serving(server, tmp_path):
    for name, (body, status, message) in bad_volumes(tmp_path).items():
        response = requests.post(f"{server.url}/v1/volumes", data=body, headers=OCTET_STREAM, timeout=30)
        assert response.status_code == status, (name, response.text)
        assert message.lower() in response.json()["detail"].lower(), (name, response.json())
        assert requests.get(f"{server.url}/v1/health", timeout=10).json()["status"] == "ok", name
    # And it still answers questions.
    client = PhotonClient(server.url)
    geometry = oblique_geometry((20, 18, 10))
    volume_id = client.upload_array(ct_array(geometry, seed=2), geometry).volume_id
    assert client.ask(volume_id, "Still there?", max_new_tokens=2, poll_interval=0.01, timeout=WAIT_S).status == "done"


def test_the_client_reports_a_bad_volume_with_the_server_reason(server, tmp_path):
    path = tmp_path / "broken.nii"
    path.write_bytes(nifti_header((10, 10, 10)) + b"\0" * 100)
    with pytest.raises(BadVolumeError, match="truncated") as refused:
        PhotonClient(server.url).upload_file(path)
    assert refused.value.status == 422
