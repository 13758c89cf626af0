"""PhotonLib: volume I/O, the Photon model, training, evaluation and serving for PhotonSlicer.

Importing ``photonlib`` itself is cheap: sub-packages are imported where they are used
(``photonlib.volume`` needs SimpleITK; the model needs torch; ``photonlib.geometry`` and the
HTTP client need NumPy only).
"""

__version__ = "0.1.0"
