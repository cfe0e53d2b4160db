"""Generate the configuration reference (docs/configuration.md) from the `Settings` object.

The reference is derived, never written by hand, so it cannot drift from the code: `tests/test_deploy.py` fails when
the committed file differs from `render()`. Regenerate it with

    python -m infra.config_docs > docs/configuration.md
"""

from __future__ import annotations

import sys
import types
from typing import Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from infra.settings import DATABASE_URL_FORM, ENV_PREFIX, Settings

REGENERATE_COMMAND = "python -m infra.config_docs > docs/configuration.md"

_SCALAR_NAMES: dict[type, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


def env_name(field_name: str) -> str:
    """The environment variable an operator sets for `field_name`, as pydantic-settings looks it up."""
    alias = Settings.model_fields[field_name].validation_alias
    if isinstance(alias, str):
        return alias.upper()
    if alias is not None:
        # AliasChoices/AliasPath would need their own rendering; refuse rather than document a wrong name.
        raise TypeError(f"{field_name}: unsupported validation_alias {alias!r}")
    return f"{ENV_PREFIX}{field_name}".upper()


def _type_text(annotation: Any) -> str:
    """Describe a field's type in the terms of the environment variable's text, not Python's."""
    origin = get_origin(annotation)
    if annotation in _SCALAR_NAMES:
        return _SCALAR_NAMES[annotation]
    if annotation is SecretStr:
        return "string (secret)"
    if origin is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in get_args(annotation))
    if origin is tuple:
        # Only `tuple[str, ...]` exists today; it is read as comma-separated text (see Settings._split_ids).
        return "comma-separated list"
    if origin in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(members) == 1 and len(get_args(annotation)) == 2:
            return f"{_type_text(members[0])}, or unset"
    # An unknown type must make the generator fail loudly: a reference that guesses is worse than none.
    raise TypeError(f"no documentation rendering for type {annotation!r}")


def default_as_env(field_name: str) -> str | None:
    """The default of a setting written as the variable's text (what an operator would type), or None when the
    setting is required or its default is unset. Setting the variable to this text reproduces the default."""
    field = Settings.model_fields[field_name]
    if field.is_required():
        return None
    value = field.get_default(call_default_factory=True)
    if value is PydanticUndefined or value is None:
        return None
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(part) for part in value)
    return str(value)


def _default_text(name: str, field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    text = default_as_env(name)
    if text is None:
        return "unset"
    return f"`{text}`" if text else '`""` (empty)'


def _constraint_text(field: FieldInfo) -> str:
    parts: list[str] = []
    for item in field.metadata:
        if isinstance(item, Ge):
            parts.append(f"≥ {item.ge}")
        elif isinstance(item, Gt):
            parts.append(f"> {item.gt}")
        elif isinstance(item, Le):
            parts.append(f"≤ {item.le}")
        elif isinstance(item, Lt):
            parts.append(f"< {item.lt}")
    return ", ".join(parts)


def _cell(text: str) -> str:
    # A bare | would end the table cell, even inside a code span.
    return text.replace("|", "\\|").replace("\n", " ")


_INTRO = f"""\
# Configuration reference

<!-- Generated from infra/settings.py by `{REGENERATE_COMMAND}`. Do not edit by hand:
     tests/test_deploy.py fails when this file and the settings disagree. -->

The API (`ras serve`), the consumer (`ras consume`) and the migration job (`ras migrate`) all read one
configuration object, `infra.settings.Settings`, from environment variables.

- **Where values come from:** only the process environment. Every variable is the field name in upper case with
  the prefix `{ENV_PREFIX}`; names are matched case-insensitively. No `.env` file is read; under Docker Compose the
  values are set in `docker-compose.yml`.
- **Defaults:** a variable that is not set takes the default below. A setting marked **required** has no default.
- **Invalid values fail at start:** the settings are validated before anything connects or listens. A missing
  required variable, a value of the wrong type or out of range, or a URL of the wrong kind stops the process with
  exit status 2 and one line per offending variable on stderr, named as you set it, with the expected form where
  there is one, for example `ras: invalid configuration: {ENV_PREFIX}PORT: Input should be less than or equal to
  65535` or `ras: invalid configuration: {ENV_PREFIX}DATABASE_URL: scheme mysql:// is not PostgreSQL; expected
  {DATABASE_URL_FORM}`.
- **URLs:** `{ENV_PREFIX}DATABASE_URL` takes `postgresql+asyncpg://…`, and also the common `postgresql://…` and
  `postgres://…` forms, which are read as `postgresql+asyncpg://…`; any other database or driver is refused.
  `{ENV_PREFIX}REDIS_URL` takes `redis://`, `rediss://` (TLS) or `unix://`; `{ENV_PREFIX}KAFKA_BOOTSTRAP_SERVERS`
  is a comma-separated list of `host:port`.
- **Unknown variables are ignored:** a misspelt name such as `{ENV_PREFIX}REDIS_ULR` is not an error; the setting
  silently keeps its default. Check the spelling against this table (the compose file is checked by the tests).
- **Formats:** booleans accept `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`); lists are comma-separated
  (`a,b,c`); a setting whose default is *unset* is left unset by omitting the variable.
"""


def _check_intro_claims() -> None:
    """The introduction states how `Settings` reads the environment; stop if the model no longer works that way."""
    config = Settings.model_config
    claims = {
        "no .env file": config.get("env_file") is None,
        "unknown variables ignored": config.get("extra") == "ignore",
        "case-insensitive names": not config.get("case_sensitive", False),
        "no secrets directory": config.get("secrets_dir") is None,
    }
    wrong = [claim for claim, holds in claims.items() if not holds]
    if wrong:
        raise ValueError(f"the reference's introduction is out of date with Settings.model_config: {wrong}")


def render() -> str:
    """The whole Markdown reference, one table row per `Settings` field in declaration order."""
    _check_intro_claims()
    rows = [
        "| Variable | Type | Default | Constraints | Description |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, field in Settings.model_fields.items():
        if not field.description:
            raise ValueError(f"Settings.{name} has no description; the configuration reference needs one")
        cells = [
            f"`{env_name(name)}`",
            _type_text(field.annotation),
            _default_text(name, field),
            _constraint_text(field),
            field.description,
        ]
        rows.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return _INTRO + "\n## Settings\n\n" + "\n".join(rows) + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
