"""Apollo Federation entities: which types a gateway may fetch by key through `Query._entities`, and what a
representation of one must look like.

Strawberry's federation schema (app/graphql/schema.py) adds `_entities` and `_service`; each entity type resolves a
representation through its `resolve_reference`, which goes through the request's loaders (app/graphql/resolvers.py),
so an entity is scoped to X-User-ID exactly as `Query.batch` and `Query.essay` are: one the caller may not see is
null. The representations are checked here before anything executes (app/graphql/limits.py calls `problem` for
each), so a malformed one is refused with a message naming it rather than failing inside Strawberry's resolver.
"""

from __future__ import annotations

from typing import Any

from graphql import FieldNode, ListValueNode, VariableNode, value_from_ast_untyped
from strawberry.federation.schema import FederationAny
from strawberry.types.scalar import ScalarDefinition, ScalarWrapper, scalar

ENTITIES_FIELD = "_entities"
KEY = "id"
"""The key field of every entity type (`@key(fields: "id")`)."""
ENTITY_TYPES = ("Batch", "Essay")


def _copied(value: Any) -> Any:
    # Strawberry's `_entities` resolver pops `__typename` out of each representation it is given, and a request's
    # variables are shared by every request with the same body (app/graphql/keys.py memoizes them): a copy per
    # request keeps the next one whole.
    return dict(value) if isinstance(value, dict) else value


REPRESENTATION_SCALAR: dict[object, type | ScalarWrapper | ScalarDefinition] = {
    FederationAny: scalar(
        name="_Any",
        description='An entity\'s representation, `{"__typename": "Batch", "id": "…"}` (federation\'s _Any).',
        serialize=lambda value: value,
        parse_value=_copied,
    )
}
"""Federation's `_Any`, as Strawberry's federation schema takes it in `scalar_overrides`."""


def representations(node: FieldNode, variables: dict[str, Any]) -> list[Any]:
    """The representations an `_entities` field is given, from a literal or a variable. A single value counts as a
    list of one, as GraphQL's input coercion reads it; a missing or null one is an empty list (validation and
    coercion report it)."""
    for argument in node.arguments or ():
        if argument.name.value != "representations":
            continue
        value = argument.value
        if isinstance(value, VariableNode):
            given = variables.get(value.name.value)
        elif isinstance(value, ListValueNode):
            given = [value_from_ast_untyped(item, variables) for item in value.values]
        else:
            given = value_from_ast_untyped(value, variables)
        if given is None:
            return []
        return given if isinstance(given, list) else [given]
    return []


def problem(index: int, representation: Any) -> str | None:
    """What is wrong with the representation at `index`, or None: it must be `{"__typename": T, "id": "…"}`, with
    T one of ENTITY_TYPES and nothing else (RAS's entities have no fields another subgraph @requires)."""
    where = f"representations[{index}]"
    if not isinstance(representation, dict):
        return f"{where} must be an object with __typename and {KEY}."
    typename = representation.get("__typename")
    if typename not in ENTITY_TYPES:
        return f"{where}: __typename must be one of {', '.join(ENTITY_TYPES)}; got {typename!r}."
    if not isinstance(representation.get(KEY), str) or representation.keys() != {"__typename", KEY}:
        return f'{where}: {typename} representations are the key alone, {{"__typename": "{typename}", "{KEY}": "…"}}.'
    return None
