"""Checks of the Slicer extension layout that run under plain Python (no Slicer needed).

Slicer only installs the files named in the module's CMakeLists.txt, the extension catalog
reads the EXTENSION_* values (repeated in the legacy .s4ext file), and the module's Python
runs inside Slicer's interpreter where torch must never be imported. Mistakes in any of
these only show up after packaging, so they are checked here on every test run.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import json
import py_compile
import re
import struct
import xml.etree.ElementTree as ElementTree
import zlib
from pathlib import Path

import pytest

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
MODULE_NAME = "PhotonSlicer"
MODULE_DIR = REPOSITORY_ROOT / MODULE_NAME
MODULE_LIB_DIR = MODULE_DIR / f"{MODULE_NAME}Lib"
MODULE_FILE = MODULE_DIR / f"{MODULE_NAME}.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / f"{MODULE_NAME}.ui"
S4EXT_FILE = REPOSITORY_ROOT / f"{MODULE_NAME}.s4ext"
#: The Extensions Index catalog entry (read by Slicer 5.8 and later; 5.6 reads the .s4ext).
CATALOG_ENTRY_FILE = REPOSITORY_ROOT / f"{MODULE_NAME}.json"
CATALOG_ENTRY_SCHEMA = (
    "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json#"
)
#: What that schema allows ("additionalProperties": false): property -> (type, allowed values or None).
#: Required: $schema, category, scm_url.
CATALOG_ENTRY_PROPERTIES = {
    "$schema": (str, None),
    "category": (str, None),
    "scm_url": (str, None),
    "scm_revision": (str, None),
    "scm_type": (str, {"git", "local"}),
    "build_dependencies": (list, None),
    "build_subdirectory": (str, None),
    "enabled": (bool, None),
    "tier": (int, {1, 3, 5}),
}
CATALOG_ENTRY_REQUIRED = {"$schema", "category", "scm_url"}
LICENSE_FILES = (REPOSITORY_ROOT / "LICENSE", REPOSITORY_ROOT / "PhotonLib" / "LICENSE")
ICON_SIZE = 128
ICON_FILES = (
    REPOSITORY_ROOT / "Resources" / "Icons" / f"{MODULE_NAME}.png",
    MODULE_DIR / "Resources" / "Icons" / f"{MODULE_NAME}.png",
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# .s4ext field -> top-level CMakeLists.txt variable holding the same value.
S4EXT_TO_CMAKE = {
    "homepage": "EXTENSION_HOMEPAGE",
    "category": "EXTENSION_CATEGORY",
    "contributors": "EXTENSION_CONTRIBUTORS",
    "iconurl": "EXTENSION_ICONURL",
    "description": "EXTENSION_DESCRIPTION",
    "screenshoturls": "EXTENSION_SCREENSHOTURLS",
    "depends": "EXTENSION_DEPENDS",
}
# Files produced by running or building, never listed in CMake.
GENERATED_NAMES = {"__pycache__", ".pytest_cache"}
GENERATED_SUFFIXES = {".pyc", ".pyo"}


# --------------------------------------------------------------------------------------------
# Small readers (CMake, .s4ext, PNG, imports)
# --------------------------------------------------------------------------------------------

_CMAKE_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|([^\s()"#]+)|(#[^\n]*)|(\()|(\))')


def cmake_commands(text: str) -> list[tuple[str, list[str]]]:
    """Split CMake source into (command name lowercased, arguments) with comments removed.

    Quoted arguments keep their spaces; nested parentheses inside a call are dropped
    (enough for the flat set()/install()/macro calls this project uses).
    """
    commands: list[tuple[str, list[str]]] = []
    name: str | None = None
    arguments: list[str] = []
    depth = 0
    for match in _CMAKE_TOKEN.finditer(text):
        quoted, bare, comment, opening, closing = match.groups()
        if comment is not None:
            continue
        if opening:
            depth += 1
            continue
        if closing:
            depth -= 1
            if depth == 0 and name is not None:
                commands.append((name, arguments))
                name, arguments = None, []
            continue
        word = quoted if quoted is not None else bare
        if depth == 0:
            name = word.lower()
        else:
            arguments.append(word)
    return commands


def cmake_variables(path: Path) -> dict[str, list[str]]:
    """Values of the set() calls in a CMakeLists.txt, with ${VAR} references expanded."""
    variables: dict[str, list[str]] = {}

    def expand(value: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: ";".join(variables.get(m.group(1), [m.group(0)])), value)

    for name, arguments in cmake_commands(path.read_text(encoding="utf-8")):
        if name == "set" and arguments:
            variables[arguments[0]] = [expand(value) for value in arguments[1:]]
    return variables


def cmake_single_value(variables: dict[str, list[str]], name: str) -> str:
    assert name in variables, f"{name} is not set in the top-level CMakeLists.txt"
    assert len(variables[name]) == 1, f"{name} should be one quoted value, got {variables[name]}"
    return variables[name][0]


def read_s4ext(path: Path) -> dict[str, str]:
    """Fields of a .s4ext file: one 'key value' per line, '#' starts a comment line."""
    fields: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        assert key not in fields, f"{path.name}: field {key!r} appears twice"
        fields[key] = value.strip()
    return fields


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, after checking the signature and the chunk CRC."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG file"
    length, chunk_type = struct.unpack(">I4s", data[8:16])
    assert chunk_type == b"IHDR" and length == 13, f"{path}: first chunk must be a 13-byte IHDR"
    chunk_data = data[16 : 16 + length]
    (crc,) = struct.unpack(">I", data[16 + length : 20 + length])
    assert zlib.crc32(chunk_type + chunk_data) & 0xFFFFFFFF == crc, f"{path}: IHDR checksum mismatch"
    width, height = struct.unpack(">II", chunk_data[:8])
    return width, height


def torch_imports(source: str, filename: str = "<source>") -> list[str]:
    """Import statements (and __import__/import_module calls) in the source that load torch."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[0] == "torch"]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and node.module.split(".")[0] == "torch":
                found.append(node.module)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            function = node.func
            function_name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
            argument = node.args[0].value
            if function_name in {"__import__", "import_module"} and isinstance(argument, str):
                if argument.split(".")[0] == "torch":
                    found.append(argument)
    return found


def source_files(folder: Path) -> list[Path]:
    """Files under folder, leaving out what Python or pytest generate."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and not GENERATED_NAMES.intersection(path.relative_to(folder).parts)
        and path.suffix not in GENERATED_SUFFIXES
    )


def relative_names(paths: list[Path], base: Path) -> set[str]:
    return {path.relative_to(base).as_posix() for path in paths}


# --------------------------------------------------------------------------------------------
# The readers themselves (so a broken reader cannot make the layout checks pass vacuously)
# --------------------------------------------------------------------------------------------


def test_cmake_reader_expands_variables_and_ignores_comments(tmp_path):
    cmake_file = tmp_path / "CMakeLists.txt"
    cmake_file.write_text(
        "set(MODULE_NAME Demo)\n"
        "# set(IGNORED yes)\n"
        "set(SCRIPTS\n  ${MODULE_NAME}.py # the module\n  ${MODULE_NAME}Lib/a.py\n  )\n"
        'set(TEXT "two words")\n'
    )
    variables = cmake_variables(cmake_file)
    assert variables["SCRIPTS"] == ["Demo.py", "DemoLib/a.py"]
    assert variables["TEXT"] == ["two words"]
    assert "IGNORED" not in variables


@pytest.mark.parametrize(
    "source, expected",
    [
        ("import torch", ["torch"]),
        ("import numpy, torch.nn as nn", ["torch.nn"]),
        ("from torch import nn", ["torch"]),
        ("def f():\n    from torch.utils import data", ["torch.utils"]),
        ("import importlib\nimportlib.import_module('torch')", ["torch"]),
        ("__import__('torch.cuda')", ["torch.cuda"]),
        ("import torchvision_free_name as t\nfrom . import torch", []),
        ("text = 'import torch'", []),
    ],
)
def test_torch_import_detector(source, expected):
    assert torch_imports(source) == expected


# --------------------------------------------------------------------------------------------
# Module CMakeLists.txt lists exactly the module's files
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def module_cmake() -> dict[str, list[str]]:
    return cmake_variables(MODULE_DIR / "CMakeLists.txt")


@pytest.fixture(scope="module")
def extension_cmake() -> dict[str, list[str]]:
    return cmake_variables(REPOSITORY_ROOT / "CMakeLists.txt")


def test_module_name_matches_folder(module_cmake):
    assert module_cmake["MODULE_NAME"] == [MODULE_NAME]


def test_every_module_python_file_is_listed_in_scripts(module_cmake):
    listed = set(module_cmake["MODULE_PYTHON_SCRIPTS"])
    python_files = [path for path in MODULE_DIR.glob("*.py")] + source_files(MODULE_LIB_DIR)
    on_disk = relative_names(python_files, MODULE_DIR)
    assert f"{MODULE_NAME}.py" in on_disk
    assert f"{MODULE_NAME}Lib/__init__.py" in on_disk
    missing = sorted(on_disk - listed)
    assert not missing, f"not in MODULE_PYTHON_SCRIPTS, so not installed with the extension: {missing}"


def test_every_listed_script_exists(module_cmake):
    listed = module_cmake["MODULE_PYTHON_SCRIPTS"]
    assert listed, "MODULE_PYTHON_SCRIPTS is empty"
    assert len(listed) == len(set(listed)), f"MODULE_PYTHON_SCRIPTS lists a file twice: {listed}"
    absent = sorted(name for name in listed if not (MODULE_DIR / name).is_file())
    assert not absent, f"MODULE_PYTHON_SCRIPTS names files that do not exist: {absent}"


def test_every_resource_is_listed(module_cmake):
    listed = set(module_cmake["MODULE_PYTHON_RESOURCES"])
    on_disk = relative_names(source_files(MODULE_DIR / "Resources"), MODULE_DIR)
    assert f"Resources/UI/{MODULE_NAME}.ui" in on_disk
    assert f"Resources/Icons/{MODULE_NAME}.png" in on_disk
    missing = sorted(on_disk - listed)
    assert not missing, f"not in MODULE_PYTHON_RESOURCES, so not installed with the extension: {missing}"


def test_every_listed_resource_exists(module_cmake):
    listed = module_cmake["MODULE_PYTHON_RESOURCES"]
    assert len(listed) == len(set(listed)), f"MODULE_PYTHON_RESOURCES lists a file twice: {listed}"
    absent = sorted(name for name in listed if not (MODULE_DIR / name).is_file())
    assert not absent, f"MODULE_PYTHON_RESOURCES names files that do not exist: {absent}"


def test_module_is_built_as_scripted_module_with_tests():
    commands = cmake_commands((MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8"))
    build_calls = [arguments for name, arguments in commands if name == "slicermacrobuildscriptedmodule"]
    assert len(build_calls) == 1, "expected one slicerMacroBuildScriptedModule() call"
    arguments = build_calls[0]
    for keyword, value in [
        ("NAME", "${MODULE_NAME}"),
        ("SCRIPTS", "${MODULE_PYTHON_SCRIPTS}"),
        ("RESOURCES", "${MODULE_PYTHON_RESOURCES}"),
    ]:
        assert keyword in arguments and arguments[arguments.index(keyword) + 1] == value, (keyword, arguments)
    assert "WITH_GENERIC_TESTS" in arguments
    unittest_calls = [arguments for name, arguments in commands if name == "slicer_add_python_unittest"]
    assert ["SCRIPT", "${MODULE_NAME}.py"] in unittest_calls


def test_extension_builds_the_module():
    commands = cmake_commands((REPOSITORY_ROOT / "CMakeLists.txt").read_text(encoding="utf-8"))
    assert ("project", [MODULE_NAME]) in commands
    assert ("find_package", ["Slicer", "REQUIRED"]) in commands
    assert ("add_subdirectory", [MODULE_NAME]) in commands
    included = [arguments[0] for name, arguments in commands if name == "include"]
    assert included == [
        "${Slicer_USE_FILE}",
        "${Slicer_EXTENSION_GENERATE_CONFIG}",
        "${Slicer_EXTENSION_CPACK}",
    ]
    # The bundled backend project folder ships with the extension.
    installs = [arguments for name, arguments in commands if name == "install"]
    assert any(
        "DIRECTORY" in arguments and any(argument.rstrip("/").endswith("/PhotonLib") for argument in arguments)
        for arguments in installs
    ), "the top-level CMakeLists.txt must install the PhotonLib folder"
    assert (REPOSITORY_ROOT / "PhotonLib" / "photonlib" / "__init__.py").is_file()


def test_the_lock_travels_with_the_bundled_photonlib(monkeypatch):
    """The module tells users to install the backend with ``-c <bundled PhotonLib>/constraints/lock.txt``."""
    monkeypatch.syspath_prepend(str(MODULE_DIR))
    from PhotonSlicerLib.backend import BUNDLED_LOCK_FILE, BUNDLED_PHOTONLIB_DIR

    assert BUNDLED_LOCK_FILE == REPOSITORY_ROOT / "PhotonLib" / "constraints" / "lock.txt"
    assert BUNDLED_LOCK_FILE.is_file() and BUNDLED_LOCK_FILE.is_relative_to(BUNDLED_PHOTONLIB_DIR)
    commands = cmake_commands((REPOSITORY_ROOT / "CMakeLists.txt").read_text(encoding="utf-8"))
    installs_photonlib = [
        arguments
        for name, arguments in commands
        if name == "install" and any(argument.rstrip("/").endswith("/PhotonLib") for argument in arguments)
    ]
    (arguments,) = installs_photonlib
    # What the install call leaves out: PATTERN globs match a file or folder name, REGEX the whole path.
    relative = BUNDLED_LOCK_FILE.relative_to(REPOSITORY_ROOT)
    for keyword, value in zip(arguments, arguments[1:]):
        if keyword == "PATTERN":
            dropped = any(fnmatch.fnmatchcase(part, value) for part in relative.parts)
            assert not dropped, f"PATTERN {value} drops the lock"
        elif keyword == "REGEX":
            for path in (relative.parent, relative):
                assert not re.search(value, f"/{path.as_posix()}"), f"REGEX {value} drops the lock"


# --------------------------------------------------------------------------------------------
# .s4ext agrees with the top-level CMakeLists.txt
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", sorted(S4EXT_TO_CMAKE))
def test_s4ext_field_matches_cmake(field, extension_cmake):
    fields = read_s4ext(S4EXT_FILE)
    assert field in fields, f"{S4EXT_FILE.name} has no {field!r} field"
    assert fields[field] == cmake_single_value(extension_cmake, S4EXT_TO_CMAKE[field])


def test_s4ext_source_fields():
    fields = read_s4ext(S4EXT_FILE)
    assert fields["scm"] == "git"
    assert fields["scmurl"] == fields["homepage"] + ".git"
    assert fields["scmrevision"]
    assert fields["build_subdirectory"] == "."
    assert fields["enabled"] in {"0", "1"}
    assert fields["status"]


# --------------------------------------------------------------------------------------------
# The catalog entry (PhotonSlicer.json) follows Slicer's schema and agrees with CMake and .s4ext
# --------------------------------------------------------------------------------------------


def catalog_entry() -> dict:
    return json.loads(CATALOG_ENTRY_FILE.read_text(encoding="utf-8"))


def cmake_list(variables: dict[str, list[str]], name: str) -> list[str]:
    """A CMake list variable ("NA" is the empty list for EXTENSION_DEPENDS)."""
    values = [item for value in variables.get(name, []) for item in value.split(";") if item]
    return [] if values == ["NA"] else values


def test_catalog_entry_follows_slicers_schema():
    entry = catalog_entry()
    assert entry.get("$schema") == CATALOG_ENTRY_SCHEMA
    assert CATALOG_ENTRY_REQUIRED <= set(entry), f"missing: {CATALOG_ENTRY_REQUIRED - set(entry)}"
    unknown = set(entry) - set(CATALOG_ENTRY_PROPERTIES)
    assert not unknown, f"the schema allows no other properties: {sorted(unknown)}"
    for key, value in entry.items():
        kind, allowed = CATALOG_ENTRY_PROPERTIES[key]
        assert isinstance(value, kind) and not (kind is int and isinstance(value, bool)), f"{key}: {value!r}"
        assert allowed is None or value in allowed, f"{key}: {value!r} is not one of {sorted(allowed)}"
    assert all(isinstance(item, str) for item in entry.get("build_dependencies", []))


def test_catalog_entry_agrees_with_cmake_and_s4ext(extension_cmake):
    entry, fields = catalog_entry(), read_s4ext(S4EXT_FILE)
    assert entry["category"] == cmake_single_value(extension_cmake, "EXTENSION_CATEGORY") == fields["category"]
    depends = cmake_list(extension_cmake, "EXTENSION_DEPENDS")
    assert entry.get("build_dependencies", []) == depends
    assert fields["depends"].split() == (depends or ["NA"])
    assert entry["scm_url"] == fields["scmurl"] and entry.get("scm_type", "git") == fields["scm"]
    assert entry["scm_revision"] == fields["scmrevision"]
    assert entry.get("build_subdirectory", ".") == fields["build_subdirectory"]
    assert entry.get("enabled", True) == (fields["enabled"] == "1")


def test_the_pytorch_extension_is_a_dependency_where_the_install_uses_it(extension_cmake):
    """The documented install of torch into Slicer's Python goes through the PyTorch extension's PyTorchUtils."""
    docs = (REPOSITORY_ROOT / "docs" / "slicer.md").read_text(encoding="utf-8")
    uses_pytorch_utils = "PyTorchUtils" in docs
    assert uses_pytorch_utils == ("PyTorch" in cmake_list(extension_cmake, "EXTENSION_DEPENDS"))


# --------------------------------------------------------------------------------------------
# License: Apache-2.0 for the whole project, declared where each package format reads it
# --------------------------------------------------------------------------------------------


def read_pyproject() -> dict:
    try:
        import tomllib
    except ImportError:  # Python < 3.11 (Slicer's 3.9)
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((REPOSITORY_ROOT / "PhotonLib" / "pyproject.toml").read_text(encoding="utf-8"))


def test_license_is_the_apache_license_2_0():
    text = LICENSE_FILES[0].read_text(encoding="utf-8")
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    for phrase in ("TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION", "9. Accepting Warranty or Additional Liability", "END OF TERMS AND CONDITIONS"):  # fmt: skip
        assert phrase in text
    assert len(text.split()) > 1500  # the whole text, not a notice
    # PhotonLib is also built and shipped on its own (wheel, the extension's PhotonLib folder): same text.
    assert LICENSE_FILES[1].read_bytes() == LICENSE_FILES[0].read_bytes()


def test_photonlib_declares_the_license():
    pyproject = read_pyproject()
    project = pyproject["project"]
    assert project["license"] == "Apache-2.0"  # an SPDX expression (PEP 639)
    assert project["license-files"] == ["LICENSE"]
    assert not any(classifier.startswith("License ::") for classifier in project.get("classifiers", []))
    # setuptools reads license expressions from 77 on; older ones reject the string form.
    (setuptools,) = [item for item in pyproject["build-system"]["requires"] if item.startswith("setuptools")]
    minimum = re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", setuptools)
    assert minimum and int(minimum.group(1)) >= 77, setuptools


def test_the_extension_installs_the_license():
    commands = cmake_commands((REPOSITORY_ROOT / "CMakeLists.txt").read_text(encoding="utf-8"))
    installs = [arguments for name, arguments in commands if name == "install"]
    assert any("FILES" in arguments and "${CMAKE_CURRENT_SOURCE_DIR}/LICENSE" in arguments for arguments in installs)
    for path in (REPOSITORY_ROOT / "CMakeLists.txt", S4EXT_FILE):
        assert "Apache-2.0" in path.read_text(encoding="utf-8"), f"{path.name} does not name the license"


def test_icon_url_points_at_the_committed_extension_icon(extension_cmake):
    homepage = cmake_single_value(extension_cmake, "EXTENSION_HOMEPAGE")
    icon_url = cmake_single_value(extension_cmake, "EXTENSION_ICONURL")
    repository = homepage.removeprefix("https://github.com/")
    match = re.fullmatch(rf"https://raw\.githubusercontent\.com/{re.escape(repository)}/[^/]+/(.+)", icon_url)
    assert match, f"EXTENSION_ICONURL should be a raw URL inside {homepage}: {icon_url}"
    assert (REPOSITORY_ROOT / match.group(1)) == ICON_FILES[0]


def test_module_category_matches_extension_category(extension_cmake):
    category = cmake_single_value(extension_cmake, "EXTENSION_CATEGORY")
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    categories = None
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Attribute) and target.attr == "categories" for target in node.targets
        ):
            # Each category is a string, or translate("qSlicerAbstractCoreModule", text): its last argument.
            categories = [
                element.args[-1].value if isinstance(element, ast.Call) else element.value
                for element in node.value.elts
            ]
    assert categories == [category]


# --------------------------------------------------------------------------------------------
# Icons
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("icon", ICON_FILES, ids=lambda path: path.relative_to(REPOSITORY_ROOT).as_posix())
def test_icon_is_128_by_128_png(icon):
    assert png_size(icon) == (ICON_SIZE, ICON_SIZE)


def test_icon_script_writes_valid_png(tmp_path):
    script = REPOSITORY_ROOT / "Resources" / "make_icons.py"
    specification = importlib.util.spec_from_file_location("make_icons", script)
    make_icons = importlib.util.module_from_spec(specification)
    specification.loader.exec_module(make_icons)
    output = tmp_path / "icon.png"
    make_icons.write_png(output, make_icons.draw_icon())
    assert png_size(output) == (ICON_SIZE, ICON_SIZE)
    assert {path.resolve() for path in make_icons.ICON_PATHS} == {path.resolve() for path in ICON_FILES}


# --------------------------------------------------------------------------------------------
# Designer .ui file
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ui_root() -> ElementTree.Element:
    return ElementTree.parse(UI_FILE).getroot()


def test_ui_top_widget_is_mrml_widget(ui_root):
    assert ui_root.tag == "ui"
    assert ui_root.findtext("class") == MODULE_NAME
    top = ui_root.find("widget")
    assert top is not None
    assert top.get("class") == "qMRMLWidget"
    assert top.get("name") == MODULE_NAME


def test_ui_parameter_bindings(ui_root):
    bound: dict[str, str] = {}
    for widget in ui_root.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") != "SlicerParameterName":
                continue
            # Dynamic property: without stdset="0" Designer treats it as a Qt property and drops it.
            assert prop.get("stdset") == "0", f"{widget.get('name')}: SlicerParameterName must be dynamic"
            parameter = prop.findtext("string")
            assert parameter and parameter.isidentifier(), f"{widget.get('name')}: bad parameter {parameter!r}"
            assert parameter not in bound.values(), f"parameter {parameter!r} bound twice"
            bound[widget.get("name")] = parameter
    assert bound.get("inputVolumeSelector") == "inputVolume"
    selector = next(w for w in ui_root.iter("widget") if w.get("name") == "inputVolumeSelector")
    assert selector.get("class") == "qMRMLNodeComboBox"
    node_types = [
        string.text
        for prop in selector.findall("property")
        if prop.get("name") == "nodeTypes"
        for string in prop.iter("string")
    ]
    assert node_types == ["vtkMRMLScalarVolumeNode"]


def test_ui_custom_widgets_are_declared(ui_root):
    declared = {
        custom.findtext("class"): (custom.findtext("extends"), custom.findtext("header"))
        for custom in ui_root.iter("customwidget")
    }
    used = {widget.get("class") for widget in ui_root.iter("widget")}
    undeclared = sorted(name for name in used if not name.startswith("Q") and name not in declared)
    assert not undeclared, f"widget classes used without a <customwidget> entry: {undeclared}"
    for name, (extends, header) in declared.items():
        assert extends, f"{name}: <extends> missing"
        assert header == f"{name}.h", f"{name}: header should be {name}.h, got {header}"


def test_ui_scene_reaches_every_node_selector(ui_root):
    selectors = {w.get("name") for w in ui_root.iter("widget") if w.get("class") == "qMRMLNodeComboBox"}
    assert selectors
    connected = {
        connection.findtext("receiver")
        for connection in ui_root.iter("connection")
        if connection.findtext("sender") == MODULE_NAME
        and connection.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
        and connection.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    }
    assert selectors <= connected, f"selectors without the scene: {sorted(selectors - connected)}"


# --------------------------------------------------------------------------------------------
# Module Python: compiles, never imports torch
# --------------------------------------------------------------------------------------------


def test_module_file_compiles(tmp_path):
    # Compile into tmp_path so the source tree gets no __pycache__.
    py_compile.compile(str(MODULE_FILE), cfile=str(tmp_path / "PhotonSlicer.pyc"), doraise=True)


def test_module_defines_slicer_classes():
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    classes = {
        node.name: [base.id for base in node.bases if isinstance(base, ast.Name)]
        for node in tree.body
        if isinstance(node, ast.ClassDef)
    }
    for suffix, base in [
        ("", "ScriptedLoadableModule"),
        ("Widget", "ScriptedLoadableModuleWidget"),
        ("Logic", "ScriptedLoadableModuleLogic"),
        ("Test", "ScriptedLoadableModuleTest"),
    ]:
        assert base in classes.get(MODULE_NAME + suffix, []), f"{MODULE_NAME + suffix} must derive from {base}"


def test_no_module_file_imports_torch():
    python_files = [path for path in source_files(MODULE_DIR) if path.suffix == ".py"]
    assert MODULE_FILE in python_files
    offenders = {
        path.relative_to(REPOSITORY_ROOT).as_posix(): imports
        for path in python_files
        if (imports := torch_imports(path.read_text(encoding="utf-8"), filename=str(path)))
    }
    assert not offenders, f"Slicer-side code must not import torch: {offenders}"


def test_screenshot_urls_point_at_committed_pngs(extension_cmake):
    homepage = cmake_single_value(extension_cmake, "EXTENSION_HOMEPAGE")
    repository = homepage.removeprefix("https://github.com/")
    urls = cmake_single_value(extension_cmake, "EXTENSION_SCREENSHOTURLS").split()
    assert urls
    for url in urls:
        match = re.fullmatch(rf"https://raw\.githubusercontent\.com/{re.escape(repository)}/[^/]+/(.+)", url)
        assert match, f"EXTENSION_SCREENSHOTURLS entries should be raw URLs inside {homepage}: {url}"
        width, height = png_size(REPOSITORY_ROOT / match.group(1))
        assert width >= 800 and height >= 500, f"{match.group(1)} is too small to show the module"
