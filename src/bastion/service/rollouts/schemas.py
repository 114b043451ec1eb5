"""Request and response bodies of staged rollouts (in the deployment and OS promotion endpoints, and their own)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field

from bastion.service.rollouts.rules import MAX_SAMPLE, MAX_SOAK_SECONDS, MAX_STAGES, RolloutPlan, parse_plan

__all__ = ["HaltSpec", "RolloutOut", "RolloutSpec", "StageOut"]


class HaltSpec(BaseModel):
    """Halt rules; an omitted field keeps its default, ``null`` switches a threshold rule off."""

    crash_drop_points: float | None = Field(default=5.0, ge=0, le=100)
    new_bucket: bool = True
    install_failures: int | None = Field(default=None, ge=0, le=MAX_SAMPLE)
    min_sample: int = Field(default=10, ge=1, le=MAX_SAMPLE)


class RolloutSpec(BaseModel):
    """Stages (percent of the group's devices, increasing, the last 100), soak per stage, halt rules."""

    stages: list[float] = Field(min_length=1, max_length=MAX_STAGES, examples=[[1, 10, 50, 100]])
    soak_seconds: int = Field(default=1800, ge=0, le=MAX_SOAK_SECONDS)
    halt: HaltSpec = Field(default_factory=HaltSpec)

    def plan(self) -> RolloutPlan:
        """The validated plan (raises InvalidRequest ``invalid_rollout``)."""
        return parse_plan(self.stages, soak_seconds=self.soak_seconds, halt=self.halt.model_dump())


class StageOut(BaseModel):
    """One stage: its share, its devices (cumulative: stages nest), how many installed, health per release."""

    index: int
    percent: float
    percent_bp: int
    devices: int
    installed: int
    current: bool
    health: list[dict[str, Any]]


class RolloutOut(BaseModel):
    id: int
    kind: str
    group_id: str
    deployment_id: int | None
    os_image_id: int | None
    seed: str
    state: str
    stage: int
    stages: list[StageOut]
    soak_seconds: int
    stage_started_at: dt.datetime
    soak_started_at: dt.datetime | None
    halt: dict[str, Any]
    halt_reason: str | None
    previous: list[dict[str, Any]]
    history: list[dict[str, Any]]
    created_at: dt.datetime
    created_by: str
    updated_at: dt.datetime
