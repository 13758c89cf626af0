"""The Photon page of Slicer's Application Settings (Edit > Application Settings > Photon).

Thin: the page only shows and edits :class:`.settings.BackendSettings` (stored with
``qt.QSettings``; never a token), as Slicer's own modules add theirs
(``slicer.app.settingsDialog().addPanel(title, ctkSettingsPanel)``). It is built once Slicer
has started (the settings dialog exists only then) and never where Slicer runs without a
main window.
"""

from __future__ import annotations

import logging

import qt
import slicer
from slicer.i18n import tr as _

from .settings import DEVICE_LABELS, DEVICES, MAX_BUSY_WAIT_S, BackendSettings

TITLE = "Photon"
_registered: list = []  # the page, once added (a module reload must not add a second one)


def register_when_slicer_has_started() -> None:
    """Add the page when Slicer's start-up has completed (at once if it has already)."""
    app = getattr(slicer, "app", None)
    if app is None or not hasattr(app, "settingsDialog"):
        return  # no application settings here (e.g. Slicer's Python without the application)
    options = app.commandOptions() if hasattr(app, "commandOptions") else None
    if options is not None and getattr(options, "noMainWindow", False):
        return
    try:
        app.connect("startupCompleted()", register)
    except Exception:  # noqa: BLE001  (an application object without that signal: start-up is over)
        register()


def register():
    """Add the Photon page to the settings dialog once; returns it."""
    if _registered:
        return _registered[0]
    try:
        page = make_page()
        slicer.app.settingsDialog().addPanel(TITLE, page)
    except Exception:  # a settings page must never stop the module from loading
        logging.warning("PhotonSlicer: the Application Settings page could not be added", exc_info=True)
        return None
    _registered.append(page)
    return page


def make_page(settings: BackendSettings | None = None):
    """The page: backend Python, device, wait for a busy backend, recent remote URLs (a ``ctkSettingsPanel``)."""
    import ctk

    settings = settings or BackendSettings(qt.QSettings())
    page = ctk.ctkSettingsPanel()
    page.setObjectName("PhotonSettingsPanel")
    layout = qt.QFormLayout(page)

    pythonEdit = qt.QLineEdit()
    pythonEdit.setObjectName("photonPythonLineEdit")
    pythonEdit.placeholderText = _("empty: Slicer's own Python (PythonSlicer)")
    pythonEdit.toolTip = _("The Python that runs the local Photon backend (PythonSlicer or an external environment).")
    pythonEdit.text = settings.python
    pythonEdit.connect("editingFinished()", lambda: setattr(settings, "python", pythonEdit.text))
    layout.addRow(_("Backend Python:"), pythonEdit)

    deviceBox = qt.QComboBox()
    deviceBox.setObjectName("photonDeviceComboBox")
    for device in DEVICES:
        deviceBox.addItem(_(DEVICE_LABELS[device]), device)
    deviceBox.toolTip = _(
        "Where the local backend runs the model (photon serve --device) and which PyTorch build "
        "Set up backend installs: cpu needs no GPU and no GPU memory."
    )
    current = settings.device.split(":")[0]
    deviceBox.setCurrentIndex(DEVICES.index(current) if current in DEVICES else 0)

    def onDeviceChosen(index: int) -> None:
        settings.device = DEVICES[index]

    deviceBox.connect("currentIndexChanged(int)", onDeviceChosen)
    layout.addRow(_("Device:"), deviceBox)

    busyWaitBox = qt.QSpinBox()
    busyWaitBox.setObjectName("photonBusyWaitSpinBox")
    busyWaitBox.minimum = 0
    busyWaitBox.maximum = MAX_BUSY_WAIT_S
    busyWaitBox.singleStep = 30
    busyWaitBox.suffix = _(" s")
    busyWaitBox.specialValueText = _("do not wait")  # shown for 0
    busyWaitBox.toolTip = _(
        "When the backend is busy with other questions (its queue is full), a question waits this long "
        "for a place, showing 'Waiting for the server (busy)', before it fails. 0: fail at once."
    )
    busyWaitBox.value = settings.busy_wait_s

    def onBusyWaitChanged(seconds: int) -> None:
        settings.busy_wait_s = seconds

    busyWaitBox.connect("valueChanged(int)", onBusyWaitChanged)
    layout.addRow(_("Wait for a busy backend:"), busyWaitBox)

    urlsBox = qt.QPlainTextEdit()
    urlsBox.setObjectName("photonRecentUrlsTextEdit")
    urlsBox.readOnly = True
    urlsBox.setMaximumHeight(90)
    urlsBox.toolTip = _("Remote backends that answered recently (their tokens are never saved).")
    urlsBox.setPlainText("\n".join(settings.recent_urls))
    clearButton = qt.QPushButton(_("Forget"))
    clearButton.setObjectName("photonForgetUrlsButton")

    def onForget() -> None:
        settings.clear_recent_urls()
        urlsBox.setPlainText("")

    clearButton.connect("clicked(bool)", lambda checked=False: onForget())
    urlsRow = qt.QHBoxLayout()
    urlsRow.addWidget(urlsBox)
    urlsRow.addWidget(clearButton)
    layout.addRow(_("Recent remote URLs:"), urlsRow)
    page.pythonLineEdit, page.deviceComboBox, page.recentUrlsTextEdit = pythonEdit, deviceBox, urlsBox
    page.busyWaitSpinBox = busyWaitBox
    return page
