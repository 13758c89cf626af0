"""``photon bench``: Photon against the Qwen2.5-VL-style input and the pruning baselines, side by side.

    from photonlib.benchmarks import preset, run_bench

    report = run_bench(preset("cpu", repeats=5))

See ``docs/bench.md`` for the methods, the figures and the cost-model limits.
"""

from photonlib.benchmarks.spec import BASELINE, METHODS, BenchSpec, preset

__all__ = ["BASELINE", "METHODS", "BenchSpec", "preset"]
