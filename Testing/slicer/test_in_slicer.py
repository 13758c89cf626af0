"""The real PhotonSlicer module inside the real Python of Slicer 5.6.2, 5.8.1 and 5.10.0.

slicer_harness.py boots each release's own ``slicer`` package (parameter node wrapper, GUI
connectors, ScriptedLoadableModule, slicer.util, i18n) over slicer-core's MRML and PySide6
widgets, in one subprocess per release, and runs every scenario of slicer_scenarios.py there:
the panel is opened as Slicer opens it and typed into with QTest key events.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import slicer_harness
import slicer_scenarios

SCENARIO_MODULE = Path(slicer_scenarios.__file__).resolve()
_results: dict = {}


def _release_results(release: str) -> dict:
    if release not in _results:
        _results[release] = slicer_harness.run_scenarios(release, SCENARIO_MODULE, slicer_scenarios.SCENARIOS)
    return _results[release]


@pytest.mark.parametrize("scenario", slicer_scenarios.SCENARIOS)
@pytest.mark.parametrize("release", slicer_harness.RELEASES)
def test_scenario_in_slicer(release, scenario):
    reason = slicer_harness.release_skip_reason(release)
    if reason:
        pytest.skip(reason)
    result = _release_results(release)[scenario]
    assert result["ok"], f"Slicer {release}, {scenario}:\n{result['error']}"
