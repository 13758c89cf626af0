"""The errors that mean "what you gave cannot be used", as opposed to a bug.

Every module that checks a user's input raises a subclass of :class:`PhotonInputError` with a
message that says what was wrong and what is accepted. The ``photon`` command turns these into
one line on stderr and exit code 2; the server turns the volume and request ones into 4xx
answers. Any other exception reaching the command line is a bug and is reported as one.

Pure Python, imports nothing: every layer (volume I/O, model, serving, the command line) can
share it without depending on another.
"""

from __future__ import annotations


class PhotonInputError(ValueError):
    """Base class: an input (file, option, setting) cannot be used; the message says why.

    A ``ValueError``, so code that already catches ``ValueError`` around a check keeps working.
    """


class UsageError(PhotonInputError):
    """Command-line options that cannot be combined or are out of range."""


class ConfigurationError(PhotonInputError):
    """A setting of a model, training recipe, benchmark or server is out of range or unknown."""


class PhotonEnvironmentError(Exception):
    """The installation cannot do what was asked: a package is missing or of an unsupported
    release. The message names what to install."""


class MissingExtraError(PhotonEnvironmentError, ImportError):
    """An optional dependency (an extra of ``photonlib``) is not installed."""
