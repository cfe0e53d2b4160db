"""The exported SDL matches the code, and every type, field, argument and enum value is described."""

from __future__ import annotations

from graphql import GraphQLEnumType, GraphQLInputObjectType, GraphQLInterfaceType, GraphQLObjectType

from app.graphql.schema import build_schema, sdl
from tests.helpers import ROOT

SDL_FILE = ROOT / "schema.graphql"


def test_schema_graphql_is_the_exported_sdl() -> None:
    assert SDL_FILE.read_text(encoding="utf-8") == sdl(), (
        "schema.graphql differs from the schema in app/; regenerate it with\n"
        "    .venv/bin/python -m app.graphql.schema > schema.graphql\n"
        "and review the difference: it is what API clients see."
    )


# Federation's own types and fields, as Strawberry adds them (the Apollo subgraph spec describes them).
FEDERATION_TYPES = {"_Entity", "_Service", "_FieldSet", "link__Purpose", "link__Import"}
FEDERATION_FIELDS = {"Query._entities", "Query._entities(representations)", "Query._service"}


def _federations(name: str) -> bool:
    return name in FEDERATION_FIELDS or name.split(".")[0] in FEDERATION_TYPES


def test_everything_is_described() -> None:
    missing = []
    for name, type_ in build_schema()._schema.type_map.items():
        if name.startswith("__") or name in {"String", "Int", "Float", "Boolean", "ID"}:
            continue
        if not type_.description:
            missing.append(name)
        if isinstance(type_, GraphQLObjectType | GraphQLInterfaceType | GraphQLInputObjectType):
            for field_name, field in type_.fields.items():
                if not field.description:
                    missing.append(f"{name}.{field_name}")
                for arg_name, arg in getattr(field, "args", {}).items():
                    if not arg.description:
                        missing.append(f"{name}.{field_name}({arg_name})")
        if isinstance(type_, GraphQLEnumType):
            missing += [f"{name}.{value}" for value, v in type_.values.items() if not v.description]
    assert [name for name in missing if not _federations(name)] == []
