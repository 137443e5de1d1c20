"""The latelex error hierarchy.

Every error a user can cause derives from :class:`LatelexError`; its message is one line that says
what went wrong and what to do. The CLI prints that line and exits non-zero, without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class LatelexError(Exception):
    """Base class of every error latelex raises on purpose."""


class InputError(LatelexError):
    """Bad input from the caller: empty texts, an empty corpus, an unknown option value."""


class FormatError(InputError):
    """A malformed file: the message names the file and, where known, the line."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f":{line}"
            where += ": "
        super().__init__(where + message)
        self.path = None if path is None else Path(path)
        self.line = line


class DuplicateIdError(FormatError):
    """The same id appears twice where ids must be unique."""


class ModelError(LatelexError):
    """A model folder or hub name that cannot be loaded, or a model without the expected parts."""


class IndexFormatError(LatelexError):
    """An index directory that is missing, half-built, truncated, foreign or from a newer version."""


class ConfigError(LatelexError):
    """An invalid or unknown configuration value."""


class AuthError(LatelexError):
    """A latelex server refused the request's API key: none was given (HTTP 401) or it is wrong (403)."""
