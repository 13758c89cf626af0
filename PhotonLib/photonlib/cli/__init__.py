"""The ``photon`` command line: one module per sub-command, registered in :mod:`main`."""
