"""Worker process of ``photon bench``: ``python -m photonlib.benchmarks.worker SPEC.json METHOD OUT.json``.

Each method runs in a fresh process so that its peak memory is its own (see ``measure.py``).
METHOD ``interleaved`` runs the timed rounds of every method of the spec in one process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    spec_file, method, out_file = argv
    from photonlib.benchmarks.measure import run_interleaved, run_method
    from photonlib.benchmarks.spec import INTERLEAVED, BenchSpec

    spec = BenchSpec.from_dict(json.loads(Path(spec_file).read_text()))
    if method == INTERLEAVED:
        result = run_interleaved(spec, spec.ordered_methods)
    else:
        result = run_method(spec, method, timings=not spec.interleave)
    Path(out_file).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
