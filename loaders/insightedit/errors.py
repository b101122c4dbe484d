"""Load-time errors of the InsightEdit loaders (see loaders/errors.py)."""

from __future__ import annotations

from ..errors import ModelFileError


class InsightEditLoadError(ModelFileError):
    """A file or folder the InsightEdit loaders cannot use as it is (raised at load time, never mid-sampling)."""


class AdapterFileError(InsightEditLoadError):
    """An IP-Adapter / IAA file of the wrong layout, family or shape, or an unreadable one."""


class MLLMLoadError(InsightEditLoadError):
    """A vision-language model folder of an unknown family, or without the files the encoder needs."""
