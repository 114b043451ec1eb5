"""atheris harness: error-report batches and log uploads (:mod:`bastion.crypto.error_report`).

The decoders must answer any bytes with ``MalformedInput``, and whatever they
accept must encode back to the same bytes (the encoding is deterministic).
"""

from __future__ import annotations

from bastion.crypto.error_report import (
    ErrorBatch,
    ErrorRecord,
    Frame,
    LogUpload,
    decode_batch,
    decode_log,
    encode_batch,
    encode_log,
)
from bastion.crypto.errors import MalformedInput

_RECORD = ErrorRecord(
    "AppCrash", "Error", "python_exception", "app", "1.0.0", 2, 1, 2, "ZeroDivisionError",
    exception="ZeroDivisionError", frames=(Frame("main.py", "divide", 2),),
)  # fmt: skip


def test_one_input(data: bytes) -> None:
    """Decode ``data`` as a batch and as a log upload."""
    try:
        batch = decode_batch(data)
    except MalformedInput:
        pass
    else:
        if encode_batch(batch) != data:
            raise AssertionError("an accepted batch does not encode back to its bytes")
    try:
        upload = decode_log(data)
    except MalformedInput:
        return
    if encode_log(upload) != data:
        raise AssertionError("an accepted log upload does not encode back to its bytes")


SEEDS: list[bytes] = [
    encode_batch(ErrorBatch("ab" * 32, "cd" * 16, 3, "1.0.0", "a", None, (("app", "1.0.0"),), 0, (_RECORD,))),
    encode_batch(ErrorBatch("ab" * 32, "cd" * 16, 3, "1.0.0", "b", "g", (), 5, ())),
    encode_log(LogUpload("ab" * 32, "1", "app", 3, "log", False)),
    b"",
    b"\xa0",
]
