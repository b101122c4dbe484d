"""The one error type of the SmartEdit loaders (see loaders/errors.py)."""

from __future__ import annotations

from ..errors import ModelFileError


class SmartEditLoadError(ModelFileError):
    """A SmartEdit file or folder that cannot be used as it is."""
