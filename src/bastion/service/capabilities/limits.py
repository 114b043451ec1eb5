"""The bounds of the capabilities slice, by name."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

__all__ = ["DEFAULT_CAPABILITY_POLICY", "CapabilityPolicy"]


@dataclass(frozen=True)
class CapabilityPolicy:
    """How long capabilities live, and what one request may carry.

    Attributes:
        default_validity: the lifetime of a capability when the caller names none.
        max_validity: the longest lifetime a caller may ask for.
        max_developer_keys: developer keys in one capability (the file format's bound).
        max_key_pem_chars: one developer key PEM.
        list_rows: capabilities listed per device, newest first.
    """

    default_validity: dt.timedelta = dt.timedelta(days=30)
    max_validity: dt.timedelta = dt.timedelta(days=365)
    max_developer_keys: int = 8
    max_key_pem_chars: int = 1024
    list_rows: int = 100


DEFAULT_CAPABILITY_POLICY = CapabilityPolicy()
