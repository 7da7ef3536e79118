"""How the ``camserve`` command reports an error to a shell user: the exit codes (listed in :mod:`camserve.cli`),
a one-line message with the field, and a hint at the likely fix."""

from __future__ import annotations

from typing import TextIO

from camserve.errors import (
    CamserveError,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_REJECTED = 3
EXIT_UNAVAILABLE = 4
EXIT_AUTH = 5
EXIT_INTERNAL = 6
EXIT_INTERRUPTED = 130


def exit_code(error: CamserveError) -> int:
    """The process exit code for an error (see the module docstring)."""
    if isinstance(error, Unauthenticated):
        return EXIT_AUTH
    if isinstance(error, Unavailable | DeadlineExceeded):
        return EXIT_UNAVAILABLE
    if isinstance(error, InvalidArgument | NotFound | ResourceExhausted):
        return EXIT_REJECTED
    return EXIT_INTERNAL


def _hint(error: CamserveError, address: str) -> str:
    if isinstance(error, Unauthenticated):
        return (
            "pass --token-file PATH/key_file.json (TorchServe writes it into its working directory) or --token, "
            "or set CAMSERVE_TOKEN_FILE / CAMSERVE_TOKEN"
        )
    if isinstance(error, Unavailable):
        return f"is the server running at {address}? start it with deploy/start.sh, or pass --address HOST:PORT"
    if isinstance(error, DeadlineExceeded):
        return "the server may be busy; pass a larger --timeout"
    if isinstance(error, NotFound):
        return "`camserve models` lists the served models; `camserve describe MODEL` its methods and layers"
    return ""


def report(error: CamserveError, address: str, stream: TextIO) -> int:
    """Prints an error for a shell user and returns its exit code."""
    first_line = error.message.splitlines()[0] if error.message else error.code
    where = f" (field: {error.field})" if error.field else ""
    print(f"camserve: {type(error).__name__}: {first_line}{where}", file=stream)
    hint = _hint(error, address)
    if hint:
        print(f"camserve: hint: {hint}", file=stream)
    return exit_code(error)
