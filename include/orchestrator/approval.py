"""The approval flag: where a reviewer's decision on one run is recorded and how it reads.

The review group's sensor waits for this record; ``python -m include.orchestrator approve|reject``
writes it. Run ids are user-supplied, so the key uses a hash of them, never the raw text.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from include.orchestrator.model import run_key


class Decision(BaseModel):
    decision: Literal["approved", "rejected"]
    by: str = Field(min_length=1, max_length=200)
    reason: str = Field("", max_length=2000)
    means: str = Field("cli", max_length=40)
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))


def decision_key(dag_id: str, run_id: str) -> str:
    return f"campaign_approval__{dag_id}__{run_key(dag_id, run_id)}"
