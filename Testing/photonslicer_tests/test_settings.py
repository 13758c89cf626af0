"""The backend settings (PhotonSlicerLib.settings) behind Edit > Application Settings > Photon, without Qt."""

from __future__ import annotations

import pytest
from PhotonSlicerLib import settings
from PhotonSlicerLib.settings import BackendSettings, DictStore


def test_defaults_when_nothing_is_stored():
    stored = BackendSettings(DictStore())
    assert (stored.python, stored.device, stored.recent_urls) == ("", "auto", [])


def test_python_and_device_round_trip():
    store = DictStore()
    stored = BackendSettings(store)
    stored.python = "  /env/bin/python "
    stored.device = "cpu"
    assert store.values == {settings.PYTHON_KEY: "/env/bin/python", settings.DEVICE_KEY: "cpu"}
    stored.device = "cuda:1"
    assert BackendSettings(store).device == "cuda:1"
    with pytest.raises(ValueError, match="auto, cuda, cpu"):
        stored.device = "tpu"


def test_unknown_stored_device_reads_as_auto():
    assert BackendSettings(DictStore({settings.DEVICE_KEY: "metal"})).device == "auto"
    assert BackendSettings(DictStore({settings.DEVICE_KEY: None})).device == "auto"


def test_recent_urls_newest_first_without_duplicates_and_bounded():
    store = DictStore()
    stored = BackendSettings(store)
    for index in range(12):
        stored.add_recent_url(f"http://server{index}:8765")
    stored.add_recent_url("http://server5:8765/")
    urls = stored.recent_urls
    assert urls[0] == "http://server5:8765" and len(urls) == settings.MAX_RECENT_URLS
    assert len(set(urls)) == len(urls)
    assert stored.add_recent_url("  ") == urls  # nothing to remember
    stored.clear_recent_urls()
    assert stored.recent_urls == []


def test_qsettings_single_string_reads_as_one_url():
    # QSettings gives a one-element list back as a plain string on some platforms.
    assert BackendSettings(DictStore({settings.RECENT_URLS_KEY: "http://a:1"})).recent_urls == ["http://a:1"]


def test_questions_wait_for_a_busy_backend_by_default():
    store = DictStore()
    stored = BackendSettings(store)
    assert stored.busy_wait_s == settings.DEFAULT_BUSY_WAIT_S == 120  # on unless the user turns it off
    stored.busy_wait_s = 0  # off: a full queue fails the question at once
    assert store.values == {settings.BUSY_WAIT_KEY: 0} and BackendSettings(store).busy_wait_s == 0
    stored.busy_wait_s = 600
    assert BackendSettings(store).busy_wait_s == 600
    for wrong in (-1, 1.5, settings.MAX_BUSY_WAIT_S + 1, "soon", None):
        with pytest.raises(ValueError, match="0 to 3600 whole seconds"):
            stored.busy_wait_s = wrong
    assert BackendSettings(store).busy_wait_s == 600


def test_stored_busy_wait_is_read_forgivingly():
    # QSettings may give numbers back as strings; anything unusable reads as the default.
    def read(value):
        return BackendSettings(DictStore({settings.BUSY_WAIT_KEY: value})).busy_wait_s

    assert (read("45"), read(" 30.0 "), read("later"), read(None), read(float("nan"))) == (45, 30, 120, 120, 120)
    assert (read(-5), read(10**6)) == (0, settings.MAX_BUSY_WAIT_S)


def test_no_setting_holds_a_token():
    assert not [key for key in settings.KEYS if "token" in key.lower()]
