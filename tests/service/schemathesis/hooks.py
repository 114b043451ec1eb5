"""schemathesis hooks for the live API fuzz test: how to send the service's binary media types."""

from __future__ import annotations

import ast
import functools
import threading
from collections.abc import Callable
from typing import Any

import schemathesis

# Evidence (RFC 9711 EAT in COSE_Sign1) is opaque bytes to the fuzzer, like an upload.
schemathesis.serializer.alias("application/eat+cwt", "application/octet-stream")


def _serialized(parse: Callable[..., ast.AST]) -> Callable[..., ast.AST]:
    """``parse``, one call at a time across the run's worker threads."""
    lock = threading.Lock()

    @functools.wraps(parse)
    def locked(*args: Any, **kwargs: Any) -> ast.AST:
        with lock:
            return parse(*args, **kwargs)

    return locked


# CPython can raise "SystemError: AST constructor recursion depth mismatch" when threads build
# ASTs at once (gh-106905; seen here on 3.11.7): with --workers 2, hypothesis' lambda descriptions
# (ast.parse of a whole schemathesis module) did so in a loaded -n 4 run. Parsing one at a time
# costs nothing the fuzzing needs.
ast.parse = _serialized(ast.parse)
