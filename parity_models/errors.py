"""The domain errors of parity_models, in one place: a dataset, a model file or settings that cannot be used.

Raised by data.py / custom_data.py (DatasetError), checkpoint.py / programs.py (CheckpointError) and
parity_build.py / sizing.py (SetupError); the ``parm`` commands (cli.py) turn each into a one-line message
and exit status 2.
"""
from __future__ import annotations


class DatasetError(RuntimeError):
    """A dataset is unknown, missing, or its files are not what they should be."""


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or not a parm checkpoint."""


class SetupError(ValueError):
    """Parity-model settings that do not go together (architecture, code, starting weights, cost budget)."""
