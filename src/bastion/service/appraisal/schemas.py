"""Request and response bodies of the appraisal policy endpoints."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import BaseModel, Field

from bastion.service.appraisal.service import MAX_RULE_NAMES, PolicyPage, PolicyView
from bastion.service.attestation.appraisal import RELAXABLE_RULES, Rule

__all__ = ["PolicyOut", "PolicyPageOut", "PolicyUpdate", "RuleOut"]

#: What each rule checks, and the claim it reads (docs/api.md, "Appraisal").
_CLAIMS = {
    Rule.SECBOOT: "oemboot (262) is true",
    Rule.DEBUG: "dbgstat (263) is 2..4, or the device holds an appDevelopment capability",
    Rule.ROLLBACK: "the os rollback counter (-70002) is not above the DiceTcbInfo svn, which is the image's",
    Rule.SWVERSION: "swversion (271) is the DiceTcbInfo version",
    Rule.SANDBOX: "insecure no sandbox (-70006) is absent",
}


class PolicyUpdate(BaseModel):
    """The complete set of rules to relax (empty: enforce every rule)."""

    relax: list[Annotated[str, Field(max_length=32)]] = Field(max_length=MAX_RULE_NAMES)


class RuleOut(BaseModel):
    rule: str
    claim: str
    enforced: bool
    relaxable: bool


class PolicyOut(BaseModel):
    group_id: str
    group_name: str
    relaxed: list[str]
    rules: list[RuleOut]
    updated_at: dt.datetime | None
    updated_by: str | None

    @classmethod
    def of(cls, view: PolicyView) -> PolicyOut:
        """The answer for a policy view."""
        rules = [
            RuleOut(
                rule=rule.value,
                claim=_CLAIMS[rule],
                enforced=rule.value not in view.relaxed,
                relaxable=rule in RELAXABLE_RULES,
            )
            for rule in Rule
        ]
        return cls(
            group_id=view.group_id,
            group_name=view.group_name,
            relaxed=list(view.relaxed),
            rules=rules,
            updated_at=view.updated_at,
            updated_by=view.updated_by,
        )


class PolicyPageOut(BaseModel):
    items: list[PolicyOut]
    limit: int
    offset: int
    more: bool

    @classmethod
    def of(cls, page: PolicyPage) -> PolicyPageOut:
        """The answer for a page."""
        return cls(items=[PolicyOut.of(v) for v in page.items], limit=page.limit, offset=page.offset, more=page.more)
