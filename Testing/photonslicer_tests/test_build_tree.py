"""Breakage 6: in a Slicer build tree the module finds the bundled PhotonLib (it is installed only later).

A Slicer build puts the module's scripts in ``<build>/lib/Slicer-X.Y/qt-scripted-modules`` (what
``slicerMacroBuildScriptedModule`` copies) while PhotonLib reaches ``<lib>/PhotonLib`` only at
install time; PhotonSlicer/CMakeLists.txt writes ``PhotonLibLocation.txt`` beside the scripts,
naming the source tree's PhotonLib. These tests lay out such a build tree and import the module's
package from there in a fresh Python.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from PhotonSlicerLib import backend

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = REPOSITORY_ROOT / "PhotonSlicer"

IMPORT_FROM = (
    "import sys; sys.path.insert(0, sys.argv[1]);"
    "from PhotonSlicerLib import backend; import photonlib;"
    "print(backend.BUNDLED_PHOTONLIB_DIR); print(photonlib.__file__)"
)


def _build_tree(tmp_path: Path, pointer: bool) -> Path:
    scripted = tmp_path / "build" / "lib" / "Slicer-5.10" / "qt-scripted-modules"
    shutil.copytree(MODULE_DIR / "PhotonSlicerLib", scripted / "PhotonSlicerLib",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copy(MODULE_DIR / "PhotonSlicer.py", scripted)
    if pointer:  # what PhotonSlicer/CMakeLists.txt writes at configure time
        (scripted / backend.BUILD_TREE_POINTER).write_text(str(REPOSITORY_ROOT / "PhotonLib") + "\n")
    return scripted


def _import_in_fresh_python(scripted: Path) -> subprocess.CompletedProcess:
    # -I: no user site and no PYTHONPATH; photonlib must come from the folder the module finds.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    return subprocess.run([sys.executable, "-I", "-c", IMPORT_FROM, str(scripted)], capture_output=True, text=True,
                          env=env, cwd=scripted)  # fmt: skip


def test_module_in_a_build_tree_imports_the_source_trees_photonlib(tmp_path):
    scripted = _build_tree(tmp_path, pointer=True)
    done = _import_in_fresh_python(scripted)
    assert done.returncode == 0, done.stderr
    bundled, imported = done.stdout.split()
    assert Path(bundled) == (REPOSITORY_ROOT / "PhotonLib").resolve() or Path(bundled).resolve() == (
        REPOSITORY_ROOT / "PhotonLib"
    ).resolve()
    installed_elsewhere = "site-packages" in imported
    assert installed_elsewhere or Path(imported).resolve().is_relative_to((REPOSITORY_ROOT / "PhotonLib").resolve())
    assert (Path(bundled) / "constraints" / "lock.txt").is_file()  # the install button's lock is found too


def test_without_the_pointer_the_build_tree_finds_no_photonlib(tmp_path):
    """What breakage 6 was: a build tree without the configure-time file has no PhotonLib beside it."""
    scripted = _build_tree(tmp_path, pointer=False)
    found = backend.find_bundled_photonlib(scripted / "PhotonSlicerLib")
    assert not (found / "photonlib" / "__init__.py").is_file()


def test_installed_layout_and_checkout_find_photonlib_beside_the_module():
    assert backend.find_bundled_photonlib(MODULE_DIR / "PhotonSlicerLib") == REPOSITORY_ROOT / "PhotonLib"


def test_cmake_writes_the_pointer_into_the_scripted_modules_build_folder():
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    match = re.search(r"file\(WRITE\s+\"([^\"]+)\"\s+\"([^\"]+)\"", text)
    assert match, "PhotonSlicer/CMakeLists.txt must write the build tree's PhotonLibLocation.txt"
    target, content = match.groups()
    assert target == "${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}/" + backend.BUILD_TREE_POINTER
    assert content.startswith("${CMAKE_CURRENT_SOURCE_DIR}/../PhotonLib")
    assert (MODULE_DIR / ".." / "PhotonLib" / "photonlib" / "__init__.py").resolve().is_file()
