"""``photonlib.client`` and ``photonlib.wire`` on their own, and ``photon ask --server``."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading

import numpy as np
import pytest

import photonlib.client as client_module
from photonlib.cli.main import main
from photonlib.client import PhotonClient, VersionMismatchError
from photonlib.geometry import VolumeGeometry
from photonlib.inference import PhotonEngine
from photonlib.volume import read_volume, write_volume
from photonlib.wire import (
    decode_raw_volume_voxels,
    encode_raw_volume,
    parse_raw_volume_header,
    read_nrrd_bytes,
    volume_content_id,
    write_nrrd_bytes,
)

from support.serving import ct_array, oblique_geometry, running_server


def test_the_client_imports_neither_torch_nor_simpleitk():
    code = (
        "import sys, photonlib.client, photonlib.wire\n"
        "heavy = sorted(m for m in ('torch', 'SimpleITK', 'photonlib.volume', 'photonlib.serving', 'fastapi') if m in sys.modules)\n"
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


# ---------------------------------------------------------------------------------- wire formats
@pytest.mark.parametrize("dtype", ["int16", "uint8", "float32", "float64", "int32"])
def test_raw_volume_round_trip(dtype):
    geometry = oblique_geometry((7, 6, 5))
    array = (np.arange(geometry.voxel_count).reshape(geometry.array_shape) % 100).astype(dtype)
    data = b"".join(encode_raw_volume(array, geometry, "CT"))
    header, offset = parse_raw_volume_header(data)
    assert header["geometry"] == geometry and header["modality"] == "CT"
    np.testing.assert_array_equal(decode_raw_volume_voxels(data, header, offset), array)


def test_volume_id_depends_on_content_not_on_byte_order():
    geometry = oblique_geometry((7, 6, 5))
    array = ct_array(geometry)
    assert volume_content_id(array, geometry) == volume_content_id(array.astype(">i2"), geometry)
    changed = array.copy()
    changed[0, 0, 0] += 1
    assert volume_content_id(changed, geometry) != volume_content_id(array, geometry)
    moved = VolumeGeometry(geometry.size, geometry.spacing, (0.0, 0.0, 0.0), geometry.direction)
    assert volume_content_id(array, moved) != volume_content_id(array, geometry)
    assert volume_content_id(array, geometry, "MR") != volume_content_id(array, geometry)


@pytest.mark.parametrize("compress", [True, False])
def test_nrrd_written_here_reads_in_simpleitk_and_back(tmp_path, compress):
    geometry = oblique_geometry((9, 8, 7))
    values = np.random.default_rng(0).random(geometry.array_shape, dtype=np.float32)
    path = tmp_path / "heat.nrrd"
    path.write_bytes(write_nrrd_bytes(values, geometry, compress=compress))
    volume = read_volume(path)
    assert volume.geometry.isclose(geometry, atol_mm=1e-12, atol_direction=1e-12)
    np.testing.assert_array_equal(volume.array, values)
    array, read_geometry = read_nrrd_bytes(path.read_bytes())
    assert read_geometry.isclose(geometry, atol_mm=1e-12, atol_direction=1e-12)
    np.testing.assert_array_equal(array, values)


@pytest.mark.parametrize("suffix", [".nrrd", ".seg.nrrd"])
def test_nrrd_written_by_simpleitk_reads_here(tmp_path, suffix):
    geometry = oblique_geometry((9, 8, 7))
    array = ct_array(geometry)
    path = write_volume(tmp_path / f"ct{suffix}", array, geometry)
    read_array, read_geometry = read_nrrd_bytes(path.read_bytes())
    assert read_geometry.isclose(geometry, atol_mm=1e-9, atol_direction=1e-9)
    np.testing.assert_array_equal(read_array, array)


def test_nrrd_in_ras_space_is_converted_to_lps():
    geometry = oblique_geometry((4, 3, 2))
    array = np.arange(24, dtype=np.float32).reshape(geometry.array_shape)
    data = write_nrrd_bytes(array, geometry, compress=False)
    head, body = data.split(b"\n\n", 1)
    ras_axes = geometry.ijk_to_ras[:3, :3]
    lines = []
    for line in head.decode().splitlines():
        if line.startswith("space:"):
            line = "space: right-anterior-superior"
        elif line.startswith("space directions:"):
            line = "space directions: " + " ".join("(" + ",".join(repr(float(v)) for v in ras_axes[:, n]) + ")" for n in range(3))
        elif line.startswith("space origin:"):
            line = "space origin: (" + ",".join(repr(float(v)) for v in geometry.origin_ras) + ")"
        lines.append(line)
    read_array, read_geometry = read_nrrd_bytes("\n".join(lines).encode() + b"\n\n" + body)
    assert read_geometry.isclose(geometry, atol_mm=1e-9, atol_direction=1e-9)
    np.testing.assert_array_equal(read_array, array)


# ---------------------------------------------------------------------------------- versions
def test_version_mismatch_is_detected_with_both_versions(monkeypatch):
    with running_server() as server:
        monkeypatch.setattr(client_module, "API_VERSION", "2")
        client = PhotonClient(server.url)
        with pytest.raises(VersionMismatchError) as mismatch:
            client.info()
        assert (mismatch.value.client_version, mismatch.value.server_version) == ("2", "1")
        assert "speaks Photon API version 2" in str(mismatch.value) and "speaks 1" in str(mismatch.value)
        with pytest.raises(VersionMismatchError):  # every response carries the server's version
            client.volume("0" * 64)


def test_a_server_that_is_not_photon_is_named_as_such():
    class Plain(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"status": "ok"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Plain)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(VersionMismatchError, match="no Photon API"):
            PhotonClient(f"http://127.0.0.1:{server.server_port}").health()
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------------- photon ask --server
def test_photon_ask_server_prints_what_the_local_mode_prints(tmp_path, capsys):
    geometry = oblique_geometry((20, 18, 10))
    volume_path = write_volume(tmp_path / "ct.nrrd", ct_array(geometry), geometry)
    with running_server(PhotonEngine.load(None, "cpu")) as server:  # the model local `photon ask` uses
        heatmap_nrrd, heatmap_nifti = tmp_path / "heat.nrrd", tmp_path / "heat.nii.gz"
        arguments = ["ask", str(volume_path), "Is there a lesion?", "--max-new-tokens", "3", "--json"]
        assert main([*arguments, "--server", server.url, "--heatmap", str(heatmap_nrrd)]) == 0
        remote = json.loads(capsys.readouterr().out)
        assert main([*arguments, "--server", server.url, "--heatmap", str(heatmap_nifti)]) == 0
        capsys.readouterr()
        held = server.service.store.stats()["entries"]
    assert held == 1  # the second call found the volume on the server and sent nothing

    assert main([*arguments, "--heatmap", str(tmp_path / "local.nrrd")]) == 0
    local = json.loads(capsys.readouterr().out)
    assert set(remote) == set(local) and set(remote["timings"]) >= {"preprocess", "vision", "prefill", "decode", "total"}
    assert remote["model"] == local["model"] == "photon-demo"
    assert remote["tokens_total"] == local["tokens_total"] and remote["tokens_kept"] == local["tokens_kept"]
    for path in (heatmap_nrrd, heatmap_nifti):
        assert read_volume(path).geometry.isclose(read_volume(volume_path).geometry, atol_mm=1e-4, atol_direction=1e-5)
    np.testing.assert_allclose(read_volume(heatmap_nrrd).array, read_volume(tmp_path / "local.nrrd").array, atol=1e-6)


def test_photon_ask_server_without_a_server_says_what_to_do(tmp_path, capsys):
    geometry = oblique_geometry((20, 18, 10))
    volume_path = write_volume(tmp_path / "ct.nrrd", ct_array(geometry), geometry)
    assert main(["ask", str(volume_path), "Anything?", "--server", "http://127.0.0.1:9"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "start one with `photon serve`" in error
