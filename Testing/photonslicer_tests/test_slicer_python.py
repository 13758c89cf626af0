"""What Slicer's own Python runs works on every Python a supported Slicer bundles.

Slicer 5.6 and 5.8 bundle Python 3.9, Slicer 5.10 Python 3.12. The module, ``PhotonSlicerLib``
and the three PhotonLib modules it uses (``photonlib.client``, ``wire``, ``geometry``, imported
from the PhotonLib folder bundled with the extension, never pip-installed) must import and work
there, with only what Slicer's Python has (NumPy, requests; no PyTorch). ``.ci/slicer_pythons.sh``
runs these tests (and the rest of ``Testing/photonslicer_tests``) on 3.9 and 3.12.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = REPOSITORY_ROOT / "PhotonSlicer"
PHOTONLIB_DIR = REPOSITORY_ROOT / "PhotonLib"
#: Oldest Python a supported Slicer bundles (5.6, 5.8).
OLDEST_SLICER_PYTHON = (3, 9)
#: Every file Slicer's process imports.
SLICER_SIDE_FILES = sorted(
    [MODULE_DIR / "PhotonSlicer.py", *(MODULE_DIR / "PhotonSlicerLib").glob("*.py")]
    + [PHOTONLIB_DIR / "photonlib" / name for name in ("__init__.py", "client.py", "wire.py", "geometry.py")]
)
#: The modules of these that need no Slicer application (the rest need slicer-core's MRML too),
#: in Slicer's order: PhotonSlicerLib first, it puts the bundled PhotonLib on the path.
PLAIN_PYTHON_MODULES = [
    "PhotonSlicerLib",
    "PhotonSlicerLib.backend",
    "PhotonSlicerLib.local_backend",
    "PhotonSlicerLib.panel",
    "photonlib",
    "photonlib.geometry",
    "photonlib.wire",
    "photonlib.client",
]
MRML_MODULES = [
    "PhotonSlicerLib.history",
    "PhotonSlicerLib.display",
    "PhotonSlicerLib.volumes",
    "PhotonSlicerLib.logic",
    "PhotonSlicerLib.tasks",
]
#: Never in Slicer's process (the model runs in the backend's) and not in Slicer's Python.
NEVER_IMPORTED = ("torch", "transformers", "SimpleITK", "fastapi", "uvicorn", "pydicom")


def _annotations(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = node.args
            for argument in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]:
                if argument.annotation is not None:
                    yield argument.annotation
            for argument in (arguments.vararg, arguments.kwarg):
                if argument is not None and argument.annotation is not None:
                    yield argument.annotation
            if node.returns is not None:
                yield node.returns
        elif isinstance(node, ast.AnnAssign):
            yield node.annotation


@pytest.mark.parametrize("path", SLICER_SIDE_FILES, ids=lambda path: path.relative_to(REPOSITORY_ROOT).as_posix())
def test_no_annotation_needs_a_newer_python_than_slicers(path):
    """``int | None`` in an annotation is evaluated when the definition runs, unless postponed.

    Python 3.9 cannot evaluate it, and Slicer's ``parameterNodeWrapper`` evaluates annotations
    (``typing.get_type_hints``), so a file using it needs ``from __future__ import annotations``
    (except the parameter node class, which must use ``typing.Union``/``Optional``).
    """
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, feature_version=OLDEST_SLICER_PYTHON)  # also: no syntax newer than 3.9
    postponed = any(
        isinstance(node, ast.ImportFrom)
        and node.module == "__future__"
        and any(a.name == "annotations" for a in node.names)
        for node in tree.body
    )
    if postponed:
        return
    offending = [
        f"line {annotation.lineno}: {ast.get_source_segment(source, annotation)}"
        for annotation in _annotations(tree)
        if any(isinstance(part, ast.BinOp) and isinstance(part.op, ast.BitOr) for part in ast.walk(annotation))
    ]
    assert not offending, f"{path.name} uses X | Y annotations that Python 3.9 evaluates and cannot: {offending}"


def _has_mrml() -> bool:
    """slicer-core installed (a bare folder named ``slicer`` on the path, a namespace portion, does not count)."""
    import importlib.util

    spec = importlib.util.find_spec("slicer")
    return spec is not None and spec.origin not in (None, "namespace") and importlib.util.find_spec("vtk") is not None


def test_slicer_side_modules_import_from_the_bundled_folder_without_heavy_packages():
    """A fresh interpreter, as Slicer's: only the module folder on the path; the module finds photonlib."""
    modules = PLAIN_PYTHON_MODULES + (MRML_MODULES if _has_mrml() else [])
    code = (
        "import importlib, json, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "for name in json.loads(sys.argv[2]):\n"
        "    importlib.import_module(name)\n"
        "import photonlib\n"
        "print(json.dumps({'photonlib': photonlib.__file__, 'loaded': sorted(sys.modules)}))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(MODULE_DIR), json.dumps(modules)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, f"Python {sys.version.split()[0]} cannot import the Slicer side:\n{run.stderr}"
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(report["photonlib"]).resolve().is_relative_to(PHOTONLIB_DIR.resolve())
    heavy = [name for name in NEVER_IMPORTED if name in report["loaded"]]
    assert not heavy, f"Slicer's process would import {heavy}"


def _oblique_geometry(size=(6, 5, 4)):
    from photonlib.geometry import VolumeGeometry

    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :3] = np.diag([-1.0, 1.0, 1.0]) @ rotation @ np.diag([0.7, 0.8, 2.5])  # left-handed, anisotropic
    ijk_to_ras[:3, 3] = (12.5, -40.0, 7.25)
    return VolumeGeometry.from_ijk_to_ras(ijk_to_ras, size), ijk_to_ras


def test_geometry_keeps_slicers_ijk_to_ras_exactly():
    geometry, ijk_to_ras = _oblique_geometry()
    np.testing.assert_allclose(geometry.ijk_to_ras, ijk_to_ras, atol=1e-12)
    assert geometry.array_shape == (4, 5, 6) and geometry.is_oblique
    assert geometry.isclose(type(geometry).from_dict(json.loads(json.dumps(geometry.to_dict()))))


def test_wire_formats_round_trip():
    from photonlib import wire

    geometry, _ = _oblique_geometry()
    array = np.arange(np.prod(geometry.array_shape), dtype=np.int16).reshape(geometry.array_shape) - 1000
    data = b"".join(wire.encode_raw_volume(array, geometry, modality="CT"))
    assert len(data) == wire.raw_volume_size(array, geometry, modality="CT")
    header, offset = wire.parse_raw_volume_header(data)
    np.testing.assert_array_equal(wire.decode_raw_volume_voxels(data, header, offset), array)
    assert header["modality"] == "CT"
    assert wire.volume_content_id(array, geometry, "CT") != wire.volume_content_id(array + 1, geometry, "CT")

    heatmap = np.linspace(0, 1, array.size, dtype=np.float32).reshape(array.shape)
    for compress in (True, False):
        read_array, read_geometry = wire.read_nrrd_bytes(wire.write_nrrd_bytes(heatmap, geometry, compress=compress))
        np.testing.assert_array_equal(read_array, heatmap)
        assert read_geometry.isclose(geometry)


def test_client_asks_a_real_backend_from_this_python(tmp_path, backend_python):
    """The whole Ask path of the panel, from this Python, against a real ``photon serve``.

    Inside Slicer 5.6/5.8 this is the only way it runs: Slicer's Python 3.9 is the client, the
    backend runs in an external environment (docs/slicer.md).
    """
    from PhotonSlicerLib.backend import AskCancelled, ClientBackend
    from PhotonSlicerLib.local_backend import READY, LocalBackendProcess

    backend = LocalBackendProcess(backend_python, device="cpu", log_dir=tmp_path)
    backend.start()
    try:
        status = backend.wait_until_ready(timeout=60)
        assert status.state == READY, status.message + "\n" + "\n".join(backend.log_text().splitlines()[-30:])
        client = ClientBackend(status.url, backend.token)
        info = client.check()
        assert info["api_version"]
        geometry, _ = _oblique_geometry((24, 20, 16))
        array = np.full(geometry.array_shape, -1000, dtype=np.int16)
        array[4:12, 6:14, 8:16] = 40
        progress = []
        answer = client.ask(array, geometry, "Is there a lesion?", modality="CT", max_new_tokens=3,
                            on_progress=lambda text, tokens: progress.append(tokens))  # fmt: skip
        assert isinstance(answer.answer, str) and 0 < answer.tokens_kept <= answer.tokens_total
        assert answer.heatmap_array.shape == array.shape and answer.heatmap_geometry.isclose(geometry)
        assert np.all((answer.heatmap_array >= 0) & (answer.heatmap_array <= 1))
        cancelled = threading.Event()
        cancelled.set()
        with pytest.raises(AskCancelled):
            client.ask(array, geometry, "Is there a lesion?", cancel_event=cancelled)
    finally:
        backend.stop(wait=10)
