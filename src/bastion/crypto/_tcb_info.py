"""TCG DiceTcbInfo (OID 2.23.133.5.4.1): the ASN.1 model, DER encoding and strict decoding.

The ASN.1 is from the TCG DICE Attestation Architecture, section 6.1.1::

    DiceTcbInfo ::= SEQUENCE {
        vendor     [0] IMPLICIT UTF8String OPTIONAL,
        model      [1] IMPLICIT UTF8String OPTIONAL,
        version    [2] IMPLICIT UTF8String OPTIONAL,
        svn        [3] IMPLICIT INTEGER OPTIONAL,
        layer      [4] IMPLICIT INTEGER OPTIONAL,
        index      [5] IMPLICIT INTEGER OPTIONAL,
        fwids      [6] IMPLICIT FWIDLIST OPTIONAL,
        flags      [7] IMPLICIT OperationalFlags OPTIONAL,
        vendorInfo [8] IMPLICIT OCTET STRING OPTIONAL,
        type       [9] IMPLICIT OCTET STRING OPTIONAL }
    FWIDLIST ::= SEQUENCE SIZE (1..MAX) OF FWID
    FWID ::= SEQUENCE { hashAlg OBJECT IDENTIFIER, digest OCTET STRING }
    OperationalFlags ::= BIT STRING

Bastion writes vendor, model, version, svn, layer and fwids. The decoder
accepts the other optional fields (they are part of the standard) but does not
expose them. Public names are re-exported by :mod:`bastion.crypto.certs`.

Example:
    >>> info = TcbInfo(version="1.0.0", svn=1, fwids=(Fwid(OID_SHA256, bytes(32)),))
    >>> decode_tcb_info(encode_tcb_info(info)) == info
    True
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from pyasn1.codec.der import decoder as der_decoder
from pyasn1.codec.der import encoder as der_encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import char, constraint, namedtype, tag, univ

from bastion.crypto.errors import MalformedInput

__all__ = [
    "MAX_FWIDS",
    "MAX_TCB_INFO_BYTES",
    "OID_SHA256",
    "Fwid",
    "TcbInfo",
    "decode_tcb_info",
    "encode_tcb_info",
]

OID_SHA256 = "2.16.840.1.101.3.4.2.1"
#: Bound on a DiceTcbInfo extension value.
MAX_TCB_INFO_BYTES = 4096
#: Bound on the number of FWIDs (one per measured boot stage).
MAX_FWIDS = 16
#: Bound on a text field, in characters.
MAX_TCB_TEXT_LEN = 128
#: Bound on a digest, in bytes (SHA-512 is the largest we expect).
MAX_DIGEST_BYTES = 64
#: Number of distinct DiceTcbInfo encodings whose decode is memoised.
TCB_INFO_CACHE_SIZE = 4096
#: Bound on svn / layer / index.
MAX_TCB_INT = 2**63 - 1


def _implicit(number: int, *, constructed: bool = False) -> tag.Tag:
    fmt = tag.tagFormatConstructed if constructed else tag.tagFormatSimple
    return tag.Tag(tag.tagClassContext, fmt, number)


def _tagged(asn1_type: Any, number: int, *, constructed: bool = False) -> Any:
    """Return ``asn1_type`` with an IMPLICIT context tag ``[number]`` (pyasn1's subtype is untyped)."""
    return asn1_type.subtype(implicitTag=_implicit(number, constructed=constructed))


class _Fwid(univ.Sequence):
    componentType = namedtype.NamedTypes(  # noqa: N815 - pyasn1 API name
        namedtype.NamedType("hashAlg", univ.ObjectIdentifier()),
        namedtype.NamedType("digest", univ.OctetString()),
    )


class _FwidList(univ.SequenceOf):
    componentType = _Fwid()  # noqa: N815 - pyasn1 API name
    subtypeSpec = constraint.ConstraintsIntersection(constraint.ValueSizeConstraint(1, MAX_FWIDS))  # noqa: N815 - pyasn1 API name


class _DiceTcbInfo(univ.Sequence):
    componentType = namedtype.NamedTypes(  # noqa: N815 - pyasn1 API name
        namedtype.OptionalNamedType("vendor", _tagged(char.UTF8String(), 0)),
        namedtype.OptionalNamedType("model", _tagged(char.UTF8String(), 1)),
        namedtype.OptionalNamedType("version", _tagged(char.UTF8String(), 2)),
        namedtype.OptionalNamedType("svn", _tagged(univ.Integer(), 3)),
        namedtype.OptionalNamedType("layer", _tagged(univ.Integer(), 4)),
        namedtype.OptionalNamedType("index", _tagged(univ.Integer(), 5)),
        namedtype.OptionalNamedType("fwids", _tagged(_FwidList(), 6, constructed=True)),
        namedtype.OptionalNamedType("flags", _tagged(univ.BitString(), 7)),
        namedtype.OptionalNamedType("vendorInfo", _tagged(univ.OctetString(), 8)),
        namedtype.OptionalNamedType("type", _tagged(univ.OctetString(), 9)),
    )


@dataclass(frozen=True)
class Fwid:
    """One firmware ID: a hash algorithm OID (dotted string) and a digest."""

    hash_alg: str
    digest: bytes


@dataclass(frozen=True)
class TcbInfo:
    """The fields of DiceTcbInfo that Bastion uses."""

    vendor: str | None = None
    model: str | None = None
    version: str | None = None
    svn: int | None = None
    layer: int | None = None
    fwids: tuple[Fwid, ...] = field(default_factory=tuple)


def _check(info: TcbInfo) -> None:
    for name in ("vendor", "model", "version"):
        value = getattr(info, name)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_TCB_TEXT_LEN):
            raise MalformedInput(f"DiceTcbInfo {name} must be text of at most {MAX_TCB_TEXT_LEN} characters")
    for name in ("svn", "layer"):
        value = getattr(info, name)
        if value is not None and (isinstance(value, bool) or not 0 <= value <= MAX_TCB_INT):
            raise MalformedInput(f"DiceTcbInfo {name} must be an integer in 0..{MAX_TCB_INT}")
    if len(info.fwids) > MAX_FWIDS:
        raise MalformedInput(f"DiceTcbInfo has more than {MAX_FWIDS} FWIDs")
    for fwid in info.fwids:
        if not 1 <= len(fwid.digest) <= MAX_DIGEST_BYTES:
            raise MalformedInput(f"an FWID digest must be 1..{MAX_DIGEST_BYTES} bytes")


def encode_tcb_info(info: TcbInfo) -> bytes:
    """DER-encode a DiceTcbInfo.

    Raises:
        MalformedInput: a field is outside the bounds the decoder enforces.
    """
    _check(info)
    asn1 = _DiceTcbInfo()
    if info.vendor is not None:
        asn1["vendor"] = info.vendor
    if info.model is not None:
        asn1["model"] = info.model
    if info.version is not None:
        asn1["version"] = info.version
    if info.svn is not None:
        asn1["svn"] = info.svn
    if info.layer is not None:
        asn1["layer"] = info.layer
    if info.fwids:
        fwids = asn1.setComponentByName("fwids").getComponentByName("fwids")
        for i, fwid in enumerate(info.fwids):
            item = _Fwid()
            try:
                item["hashAlg"] = univ.ObjectIdentifier(fwid.hash_alg)
            except PyAsn1Error as exc:
                raise MalformedInput("FWID hash algorithm is not a dotted OID") from exc
            item["digest"] = fwid.digest
            fwids[i] = item
    return bytes(der_encoder.encode(asn1))


def _opt_text(asn1: Any, name: str) -> str | None:
    value = asn1[name]
    return str(value) if value.isValue else None


def _opt_int(asn1: Any, name: str) -> int | None:
    value = asn1[name]
    return int(value) if value.isValue else None


def decode_tcb_info(der: bytes) -> TcbInfo:
    """Decode a DiceTcbInfo (bounded by MAX_TCB_INFO_BYTES).

    The input must be the exact DER encoding (re-encoding what was decoded must
    give the same bytes), so one TcbInfo has one encoding. Successful decodes
    are memoised (the result is immutable and a pure function of the bytes; an
    Alias certificate repeats at every attestation of the same firmware).

    Raises:
        MalformedInput: not a valid DiceTcbInfo DER encoding, or out of bounds.
    """
    if len(der) > MAX_TCB_INFO_BYTES:
        raise MalformedInput(f"DiceTcbInfo is larger than {MAX_TCB_INFO_BYTES} bytes")
    return _decode_tcb_info_cached(bytes(der))


@functools.lru_cache(maxsize=TCB_INFO_CACHE_SIZE)
def _decode_tcb_info_cached(der: bytes) -> TcbInfo:
    try:
        asn1, rest = der_decoder.decode(der, asn1Spec=_DiceTcbInfo())
        # pyasn1's DER decoder tolerates some BER; the re-encoding check is
        # what makes the decoder strict.
        canonical = bytes(der_encoder.encode(asn1))
        info = TcbInfo(
            vendor=_opt_text(asn1, "vendor"),
            model=_opt_text(asn1, "model"),
            version=_opt_text(asn1, "version"),
            svn=_opt_int(asn1, "svn"),
            layer=_opt_int(asn1, "layer"),
            fwids=tuple(
                Fwid(hash_alg=str(item["hashAlg"]), digest=bytes(item["digest"]))
                for item in (asn1["fwids"] if asn1["fwids"].isValue else ())
            ),
        )
    # OverflowError: pyasn1 reads a length too large for an index (fuzz/harnesses/fuzz_tcb_info.py).
    except (PyAsn1Error, ValueError, TypeError, LookupError, RecursionError, OverflowError) as exc:
        raise MalformedInput("not a DER DiceTcbInfo") from exc
    if rest:
        raise MalformedInput("trailing bytes after DiceTcbInfo")
    if canonical != der:
        raise MalformedInput("DiceTcbInfo is not in DER")
    _check(info)
    for name in ("svn", "layer"):
        if getattr(info, name) is not None and getattr(info, name) < 0:
            raise MalformedInput(f"DiceTcbInfo {name} is negative")
    index = _opt_int(asn1, "index")
    if index is not None and not 0 <= index <= MAX_TCB_INT:
        raise MalformedInput("DiceTcbInfo index is out of range")
    return info
