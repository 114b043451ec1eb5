"""Tenant CA lifecycle commands: CRL download, rotation, the list of CAs and issued certificates.

``bastion tenant download-crl``, ``bastion tenant ca rotate``, ``bastion tenant ca list``
and ``bastion tenant ca certificates``. They use the login saved by ``bastion login``.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography import x509

from bastion.cli._client import ServiceClient
from bastion.cli.apps import tenant_app
from bastion.cli.output import JsonOption, emit_object, emit_table, err_console, fail, progress
from bastion.crypto.certs import MAX_CERT_PEM_BYTES
from bastion.crypto.crl import MAX_CRL_BYTES, load_crl, load_crl_bundle, verify_crl
from bastion.crypto.errors import CryptoError

__all__ = ["ca_app", "ca_certificates_cmd", "ca_list_cmd", "ca_rotate_cmd", "download_crl_cmd"]

ca_app = typer.Typer(
    help="The tenant CA's lifecycle: rotation, its CAs, the certificates they issued.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
tenant_app.add_typer(ca_app, name="ca")

CA_COLUMNS = ("id", "state", "fingerprint", "not_after", "retire_at", "crl_number", "crl_next_update")
CERT_COLUMNS = ("serial", "device_id", "ca_id", "issued_at", "not_after", "revoked_at", "revocation_reason")
#: Most CAs a trust bundle may hold when the CLI checks a CRL against it.
_MAX_BUNDLE_CERTS = 8

LimitOption = Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many rows.")]
OffsetOption = Annotated[int, typer.Option("--offset", min=0, help="Skip this many rows (newest first).")]


def _trust_bundle(client: ServiceClient) -> list[x509.Certificate]:
    pem = client.request("GET", "/ca").content
    if len(pem) > _MAX_BUNDLE_CERTS * MAX_CERT_PEM_BYTES:
        fail("the service sent an oversized CA bundle", hint="check the URL saved by 'bastion login'")
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        fail("the service sent a CA bundle that does not parse", hint="check the URL saved by 'bastion login'")
    return certs[:_MAX_BUNDLE_CERTS]


def _same_key_id(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    """The CRL's authority key identifier names the CA's key (RFC 5280 5.2.1), if both carry one."""
    try:
        aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return True
    return aki is None or aki == ski


def _check(crls: list[x509.CertificateRevocationList], cas: list[x509.Certificate]) -> None:
    """Every CRL must be signed by one of the tenant's CAs and be current (fail closed)."""
    now = dt.datetime.now(dt.UTC)
    for crl in crls:
        issuer = next((ca for ca in cas if ca.subject == crl.issuer and _same_key_id(crl, ca)), None)
        if issuer is None:
            fail("a downloaded CRL was not issued by any of your tenant's CAs", hint="run 'bastion tenant download-ca'")
        try:
            verify_crl(crl, issuer, now=now)
        except CryptoError as exc:
            fail(f"a downloaded CRL does not verify: {exc}", hint="try again; if it persists, check the service")


@tenant_app.command("download-crl")
def download_crl_cmd(
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the CRL here instead of stdout.")] = None,
    der: Annotated[bool, typer.Option("--der", help="One CRL in DER (default: PEM, every trusted CA's).")] = False,
    ca_id: Annotated[
        int | None, typer.Option("--ca-id", min=1, help="With --der: that CA's CRL (see 'bastion tenant ca list').")
    ] = None,
) -> None:
    """Download the tenant CA's CRL (RFC 5280), checked against the tenant's CAs.

    The PEM bundle holds one CRL per trusted CA (two during a rotation's
    overlap); give it to a broker as its CRL file (Mosquitto: ``crlfile``).
    """
    params: dict[str, Any] = {"format": "der" if der else "pem"}
    if ca_id is not None:
        params["ca_id"] = ca_id
    with ServiceClient.from_saved_login() as client:
        body = client.request("GET", "/ca/crl", params=params).content
        cas = _trust_bundle(client)
    if len(body) > MAX_CRL_BYTES:
        fail("the service sent an oversized CRL", hint="check the URL saved by 'bastion login'")
    try:
        crls = [load_crl(body)] if der else load_crl_bundle(body)
    except CryptoError as exc:
        fail(f"the service sent a CRL that does not parse: {exc}", hint="check the URL saved by 'bastion login'")
    _check(crls, cas)
    if output is None:
        if der:
            sys.stdout.buffer.write(body)
        else:
            sys.stdout.write(body.decode("ascii", "replace"))
        return
    try:
        output.write_bytes(body)
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror}")
    revoked = sum(len(list(crl)) for crl in crls)
    progress(f"{len(crls)} CRL(s) with {revoked} revoked certificate(s) written to {output}")


@ca_app.command("rotate")
def ca_rotate_cmd(
    overlap_hours: Annotated[
        int,
        typer.Option(
            "--overlap-hours",
            min=0,
            max=90 * 24,
            help="How long the old CA stays trusted beside its successor (default 48: two certificate lifetimes).",
        ),
    ] = 48,
    as_json: JsonOption = False,
) -> None:
    """Create a successor tenant CA; new certificates come from it, the old CA retires after the overlap (admin)."""
    with ServiceClient.from_saved_login() as client:
        result = client.post_json("/ca/rotate", {"overlap_hours": overlap_hours})
    if as_json:
        emit_object(result, as_json=True)
        return
    emit_table([result["successor"], result["retiring"]], CA_COLUMNS, as_json=False, title="tenant CAs")
    err_console.print(
        f"CA {result['successor']['id']} signs from now on; CA {result['retiring']['id']} retires at "
        f"{result['retiring']['retire_at']}. Give relying parties the new bundle and CRLs now: "
        "'bastion tenant download-ca' and 'bastion tenant download-crl'."
    )


def _page(client: ServiceClient, path: str, limit: int, offset: int, **params: Any) -> tuple[list[Any], bool]:
    """One page of a list, and whether more rows follow (asks for one more than shown)."""
    rows: list[Any] = client.get_json(path, limit=limit + 1, offset=offset, **params)
    return rows[:limit], len(rows) > limit


def _say_cut(cut: bool, limit: int, offset: int, what: str) -> None:
    if cut:
        err_console.print(f"[yellow]more {what} follow;[/yellow] show them with --offset {offset + limit}")


@ca_app.command("list")
def ca_list_cmd(limit: LimitOption = 100, offset: OffsetOption = 0, as_json: JsonOption = False) -> None:
    """List the tenant's CAs, newest first: signing, retiring (in overlap) or retired."""
    with ServiceClient.from_saved_login() as client:
        rows, cut = _page(client, "/ca/authorities", limit, offset)
    emit_table(rows, CA_COLUMNS, as_json=as_json, title="tenant CAs")
    _say_cut(cut, limit, offset, "CAs")


@ca_app.command("certificates")
def ca_certificates_cmd(
    device: Annotated[str | None, typer.Option("--device", help="Only this device's certificates.")] = None,
    limit: LimitOption = 100,
    offset: OffsetOption = 0,
    as_json: JsonOption = False,
) -> None:
    """List the device certificates the tenant's CAs issued, newest first, with their revocation."""
    params = {"device_id": device} if device else {}
    with ServiceClient.from_saved_login() as client:
        rows, cut = _page(client, "/ca/certificates", limit, offset, **params)
    emit_table(rows, CERT_COLUMNS, as_json=as_json, title="device certificates")
    _say_cut(cut, limit, offset, "certificates")
