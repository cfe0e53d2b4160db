"""GraphQL input types."""

from __future__ import annotations

import strawberry

from app.graphql.enums import PhaseName, ProcessingStage


@strawberry.input(description="Selects a batch's essays by the status of their result for one phase.")
class EssayPhaseFilter:
    phase: PhaseName = strawberry.field(description="The phase whose result is tested.")
    statuses: list[ProcessingStage] | None = strawberry.field(
        default=None,
        description="Match essays whose result has one of these statuses; UNKNOWN matches any status this "
        "service does not know. Omit to match any result; an empty list matches none.",
    )
    without_result: bool = strawberry.field(
        default=False, description="Also match essays that have no result for the phase yet."
    )
