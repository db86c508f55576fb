"""Errors that mean "the input or the environment is wrong", printed without a traceback by the CLI."""

from __future__ import annotations

import sys


class SrsegError(Exception):
    """Base for errors a user can fix or must know about (bad file, URL, parameter, network, disk)."""


# ValueError covers ConfigError, ManifestError and the validators' messages; OSError covers
# missing files, full disks and network failures (requests' errors are OSErrors too). Everything
# else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (SrsegError, ValueError, OSError)

# Errors of libraries that talk to services (registry, object store): user-facing too, but the
# libraries are heavy, so they are recognised only once something else has imported them.
_SERVICE_ERRORS = (
    ("mlflow.exceptions", "MlflowException"),
    ("botocore.exceptions", "BotoCoreError"),
    ("botocore.exceptions", "ClientError"),
)


def is_user_error(exc: BaseException) -> bool:
    """True for errors the CLI reports as one line (exit 2) instead of a traceback."""
    if isinstance(exc, USER_ERRORS):
        return True
    for module_name, class_name in _SERVICE_ERRORS:
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module is not None else None
        if cls is not None and isinstance(exc, cls):
            return True
    return False
