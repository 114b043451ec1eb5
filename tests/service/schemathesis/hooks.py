"""schemathesis hooks for the live API fuzz test: how to send the service's binary media types."""

from __future__ import annotations

import schemathesis

# Evidence (RFC 9711 EAT in COSE_Sign1) is opaque bytes to the fuzzer, like an upload.
schemathesis.serializer.alias("application/eat+cwt", "application/octet-stream")
