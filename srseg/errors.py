"""Errors that mean "the input is wrong", printed without a traceback by the CLI."""

from __future__ import annotations


class SrsegError(Exception):
    """Base for errors a user can fix (bad file, bad URL, bad parameter)."""


# ValueError covers ConfigError, ManifestError and the validators' messages; OSError covers
# missing files and network failures. Everything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (SrsegError, ValueError, OSError)
