"""Worker process of ``photon bench``: ``python -m photonlib.benchmarks.worker SPEC.json METHOD OUT.json``.

Each method runs in a fresh process so that its peak memory is its own (see ``measure.py``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    spec_file, method, out_file = argv
    from photonlib.benchmarks.measure import run_method
    from photonlib.benchmarks.spec import BenchSpec

    spec = BenchSpec.from_dict(json.loads(Path(spec_file).read_text()))
    result = run_method(spec, method)
    Path(out_file).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
