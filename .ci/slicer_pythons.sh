#!/usr/bin/env bash
# The Slicer-side tests (Testing/photonslicer_tests) on the Pythons Slicer bundles: 3.9 (Slicer 5.6, 5.8) and
# 3.12 (Slicer 5.10). Each in a fresh virtual environment (.ci-venvs/slicer-py3X) with only what
# Slicer's Python has (Testing/photonslicer_tests/requirements-slicer-python.txt: NumPy, requests, plus
# slicer-core, PySide6 and pytest for the tests; no PyTorch, PhotonLib not installed: the module
# imports photonlib from the PhotonLib folder, as inside Slicer).
#
# The tests that need a real `photon serve` start it with PHOTONSLICER_BACKEND_PYTHON, default
# .venv/bin/python (pass 1 of .ci/run makes it); they are skipped without one, except in CI.
# A missing Python fails in CI (CI=true) and is skipped with a warning elsewhere.
# Arguments are passed to pytest (e.g. -k local_backend). About 2 minutes on 2 cores, half of it
# installing the two environments.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

REQUIREMENTS=Testing/photonslicer_tests/requirements-slicer-python.txt
PIP_FLAGS=(--quiet --disable-pip-version-check)
in_ci=false
[[ "${CI:-}" == "true" || "${CI:-}" == "1" ]] && in_ci=true

find_python() {  # find_python 3.9: the newest pyenv build of that version, else python3.9 on PATH
    local version=$1 found
    found=$(ls -d "$HOME"/.pyenv/versions/"$version".*/bin/python"$version" 2>/dev/null | sort -V | tail -n 1 || true)
    [[ -n "$found" && -x "$found" ]] || found=$(command -v "python$version" || true)
    echo "$found"
}

backend_python=${PHOTONSLICER_BACKEND_PYTHON:-}
if [[ -z "$backend_python" && -x .venv/bin/python ]] && .venv/bin/python -c "import torch, fastapi" 2>/dev/null; then
    backend_python=$PWD/.venv/bin/python
fi
if [[ -z "$backend_python" ]]; then
    if $in_ci; then
        echo "== Slicer's Pythons: no backend Python (set PHOTONSLICER_BACKEND_PYTHON or run pass 1 of .ci/run first)" >&2
        exit 1
    fi
    echo "== Slicer's Pythons: no backend Python; the tests with a real photon serve will be skipped" >&2
fi

failures=()
for entry in "3.9:Slicer 5.6, 5.8:PySide6,numpy,requests" "3.12:Slicer 5.10:slicer,vtk,PySide6,numpy,requests"; do
    IFS=: read -r version slicers required <<<"$entry"
    name="Python $version ($slicers)"
    python=$(find_python "$version")
    if [[ -z "$python" ]]; then
        if $in_ci; then
            echo "== $name: FAILED: no Python $version found (~/.pyenv/versions/$version.* or python$version on PATH)" >&2
            failures+=("$version (missing)")
        else
            echo "== $name: SKIPPED: no Python $version found (~/.pyenv/versions/$version.* or python$version on PATH)" >&2
        fi
        continue
    fi
    env_dir=.ci-venvs/slicer-py${version/./}
    started=$SECONDS
    rm -rf "$env_dir"
    if ! "$python" -m venv "$env_dir" || ! "$env_dir/bin/pip" install "${PIP_FLAGS[@]}" -r "$REQUIREMENTS"; then
        echo "== $name: FAILED: the test environment could not be installed ($python)" >&2
        failures+=("$version (install)")
        continue
    fi
    [[ -n "$backend_python" ]] && $in_ci && required+=",backend"
    echo "== $name: $("$env_dir/bin/python" --version), $("$env_dir/bin/pip" list --disable-pip-version-check 2>/dev/null \
        | grep -iE '^(numpy|requests|pyside6.essentials|slicer-core|pytest) ' | awk '{printf "%s %s, ", $1, $2}' | sed 's/, $//')"
    if PHOTONSLICER_TESTS_REQUIRE=$required PHOTONSLICER_BACKEND_PYTHON=$backend_python \
        "$env_dir/bin/python" -m pytest -q -p no:cacheprovider Testing/photonslicer_tests "$@"; then
        echo "== $name: passed in $((SECONDS - started)) s"
    else
        echo "== $name: FAILED: the Slicer-side tests fail on Python $version ($python)" >&2
        failures+=("$version")
    fi
done

if ((${#failures[@]})); then
    echo "== Slicer's Pythons FAILED on: ${failures[*]}" >&2
    exit 1
fi
