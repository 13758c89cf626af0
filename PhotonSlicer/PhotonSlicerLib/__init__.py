"""Helper package of the PhotonSlicer module.

Slicer loads every ``.py`` file placed directly in a scripted module's folder as a module of
its own, so the module's helper code lives in this package instead. Keep it free of torch:
the model runs in the separate Photon backend, never inside Slicer's Python.

Every file of this package must be listed in ``MODULE_PYTHON_SCRIPTS`` in
``PhotonSlicer/CMakeLists.txt``, otherwise it is not installed with the extension.
"""
