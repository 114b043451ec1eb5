"""Products and device groups: each group's update policy, OS feed, maintenance window and devices."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import HTMLResponse

from bastion.service.console.deps import ConsoleReaderDep, page_router
from bastion.service.console.paging import PageParamsDep, filter_value, paginate
from bastion.service.console.render import NavItem, render
from bastion.service.console.views.products import products_page
from bastion.service.web import SessionDep

__all__ = ["NAV", "router"]

router = page_router()
NAV = NavItem("Products", "/console/products")


@router.get("/products", include_in_schema=False)
def products(request: Request, me: ConsoleReaderDep, session: SessionDep, params: PageParamsDep) -> HTMLResponse:
    """A page of products (``?name=`` a name prefix) with their groups."""
    name = filter_value(request, "name")
    page = products_page(session, me.tenant_id, offset=params.offset, limit=params.fetch, name_prefix=name)
    rows, pager = paginate(params, page.products, "/console/products", {"name": name})
    return render(request, "pages/products.html", {"rows": rows, "pager": pager, "total": page.total, "name": name})
