"""HTTP endpoint: ``GET /ca`` (the tenant CA certificate as PEM)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from bastion.service.auth.deps import ReaderDep
from bastion.service.ca.service import tenant_ca_pem
from bastion.service.web import SessionDep

router = APIRouter(tags=["ca"])


@router.get("/ca", response_class=Response)
def get_ca(who: ReaderDep, session: SessionDep) -> Response:
    return Response(tenant_ca_pem(session, who.tenant_id), media_type="application/x-pem-file")
