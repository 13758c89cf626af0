#!/usr/bin/env bash
# Rewrite PhotonLib/constraints/lock.txt from a fresh install that passes the tests.
#
# Makes a virtual environment in a temporary folder, installs the pinned torch, then
# PhotonLib[test] with no constraints (so pip takes the newest versions the ranges in
# PhotonLib/pyproject.toml allow), writes what got installed (pip freeze, photonlib left out)
# as the new lock, checks that its pins also resolve on Python 3.12, and runs the README's test
# command (which checks the new lock too); if any test fails the old lock is put back.
# Takes several minutes.
#
#   bash PhotonLib/scripts/refresh_lock.sh      # PYTHON=python3.11 and PYTHON312=... to choose
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

TORCH_VERSION=2.13.0
LOCK=PhotonLib/constraints/lock.txt
work=$(mktemp -d)
# Whatever stops the script before the tests passed (a failure, Ctrl-C) puts the old lock back.
trap 'if [[ -f $work/lock.old ]]; then cp "$work/lock.old" "$LOCK"; fi; rm -rf "$work"' EXIT
cp "$LOCK" "$work/lock.old"

"${PYTHON:-python3}" -m venv "$work/venv"
pip=("$work/venv/bin/pip" --quiet --disable-pip-version-check)
"${pip[@]}" install "torch==$TORCH_VERSION"
"${pip[@]}" install -e "./PhotonLib[test]"

# --all keeps setuptools (torch needs it; plain freeze hides it), pip itself came with the venv.
# torch==2.13.0+cpu -> torch==2.13.0, so that CUDA builds of the same version satisfy the pin.
"${pip[@]}" freeze --all --exclude-editable | grep -v '^pip==' | sed -E 's/^(torch==[^+]+)\+.*/\1/' > "$work/pins.txt"

# Python 3.12: do the same pins install there? Resolve only (pip --dry-run), nothing is installed.
# The report also tells which pins refuse Python 3.10 (their Requires-Python).
python312=${PYTHON312:-$(command -v python3.12 || true)}
python_notes="# Python 3.12: not checked (no python3.12 found)."
if [[ -n $python312 ]]; then
    "$python312" -m venv "$work/venv312"
    "$work/venv312/bin/pip" install --quiet --disable-pip-version-check --dry-run --report "$work/report312.json" -r "$work/pins.txt"
    python_notes=$("$work/venv312/bin/python" - "$work/report312.json" "$work/pins.txt" <<'PY'
import json, platform, sys, textwrap
from pip._vendor.packaging.specifiers import SpecifierSet
from pip._vendor.packaging.utils import canonicalize_name
pinned = {canonicalize_name(line.split("==")[0]) for line in open(sys.argv[2])}
items = [i for i in json.load(open(sys.argv[1]))["install"] if canonicalize_name(i["metadata"]["name"]) in pinned]
def names(selected):
    return ", ".join(sorted(f"{i['metadata']['name']}=={i['metadata']['version']}" for i in selected))
sources = [i for i in items if not i["download_info"]["url"].endswith(".whl")]
no_310 = [i for i in items if not SpecifierSet(i["metadata"].get("requires_python") or "").contains("3.10.99")]
notes = [f"Python 3.12: every pin resolves on CPython {platform.python_version()} too (pip install --dry-run;"
         f" tests not run there), all from wheels{' except ' + names(sources) + ' (source only, built on install)' if sources else ''}."]
if no_310:
    notes.append(f"Python 3.10: not usable with this lock; install without -c there ({len(no_310)} pins need a newer Python: {names(no_310)}).")
print("\n".join(textwrap.fill(note, 98, initial_indent="# ", subsequent_indent="#   ", break_on_hyphens=False) for note in notes))
PY
)
fi

python_version=$("$work/venv/bin/python" -c 'import platform; print(platform.python_implementation(), platform.python_version())')
torch_build=$("$work/venv/bin/python" -c 'import torch; print(torch.__version__)')
cat > "$work/lock.txt" <<HEADER
# PhotonLib lock: the exact versions of everything
#   pip install torch==$TORCH_VERSION && pip install -e "./PhotonLib[test]"
# installs (photonlib itself left out), known to pass the whole test suite together.
# Use it as pip constraints, after installing torch:
#   pip install torch==$TORCH_VERSION
#   pip install -c $LOCK -e "./PhotonLib[test]"
# It pins only what it names: packages outside the test extra (tensorboard from [train],
# flash-attn from [flash]) get the newest versions their ranges allow.
#
# Tested on $(date -u +%Y-%m-%d): $(uname -s) $(uname -m), $python_version, torch $torch_build.
# torch is pinned without a local label, so a CUDA build of the same version (e.g.
# $TORCH_VERSION+cu128) satisfies it too: pip ignores local version labels in == pins.
$python_notes
#
# Refresh: bash PhotonLib/scripts/refresh_lock.sh (fresh environment, newest versions the ranges
# in PhotonLib/pyproject.toml allow, the README's test command; rewrites this file only if it passes).
# The newest versions instead: install without -c. That combination is untested and can break
# when a dependency changes (transformers 5.24.0 once did).
HEADER
cat "$work/pins.txt" >> "$work/lock.txt"
mv "$work/lock.txt" "$LOCK"

# The test command, exactly as the README gives it; Testing/test_lock.py checks the new lock.
if ! "$work/venv/bin/python" -m pytest Testing; then
    echo "tests failed: $LOCK left as it was" >&2
    exit 1
fi
rm "$work/lock.old"
echo "wrote $LOCK ($(grep -cv '^#' "$LOCK") pins)"
