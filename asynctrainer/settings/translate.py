"""Errors of settings validation: pydantic's ``ValidationError`` → :class:`SettingsError`.

Validators raise the :class:`PydanticCustomError` values made by :func:`invalid`,
:func:`unsupported` and :func:`unknown_key`; :func:`settings_error` turns the first error of a
``ValidationError`` into one :class:`~asynctrainer.errors.SettingsError` (or
:class:`~asynctrainer.errors.UnsupportedFeatureError`) paragraph naming the key path, the bad
value and what is allowed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticCustomError

from asynctrainer.errors import SettingsError, UnsupportedFeatureError

__all__ = ["invalid", "settings_error", "show", "unknown_key", "unsupported"]

# Error types of the PydanticCustomErrors raised by validators. ctx["where"] is a dotted suffix
# of the key path.
_INVALID = "asynctrainer_invalid"
_UNSUPPORTED = "asynctrainer_unsupported"
_UNKNOWN_KEY = "asynctrainer_unknown_key"


def invalid(detail: str, where: str = "") -> PydanticCustomError:
    """A bad value: ``detail`` says what is wrong and what is allowed."""
    return PydanticCustomError(_INVALID, "{detail}", {"detail": detail, "where": where})


def unsupported(detail: str, where: str = "") -> PydanticCustomError:
    """A valid ML-Agents key naming a feature not built yet."""
    return PydanticCustomError(_UNSUPPORTED, "{detail}", {"detail": detail, "where": where})


def unknown_key(key: object, allowed: Iterable[str], where: str = "") -> PydanticCustomError:
    """A key that is not one of ``allowed``."""
    return PydanticCustomError(
        _UNKNOWN_KEY,
        "The option '{key}' is invalid",
        {"key": str(key), "allowed": ", ".join(sorted(allowed)), "where": where},
    )


def show(value: object) -> str:
    """Shows a config value the way a YAML user wrote it, on one short line."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = repr(value)
    text = text.replace("\n", " ")
    return text if len(text) <= 80 else text[:77] + "..."


_TYPE_EXPECTATIONS: dict[str, str] = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "int_parsing_size": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping of options",
    "model_attributes_type": "expected a mapping of options",
    "missing": "a value is required",
}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def settings_error(exc: ValidationError) -> SettingsError:
    """Turns a pydantic ValidationError into one SettingsError about its first error."""
    error = exc.errors(include_url=False)[0]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    parts = [str(p) for p in error["loc"] if not (isinstance(p, str) and p.endswith("]") and "[" in p)]
    where = str(ctx.get("where", ""))
    if where:
        parts.append(where)
    path = ".".join(parts)
    kind = error["type"]
    value = show(error.get("input"))
    if kind in (_UNKNOWN_KEY, "extra_forbidden"):
        key = str(ctx["key"]) if kind == _UNKNOWN_KEY else parts.pop()
        owner = ".".join(parts) or "the top level"
        allowed = f" Allowed: {ctx['allowed']}." if "allowed" in ctx else ""
        message = f"The option '{key}' was specified in your YAML file for {owner}, but is invalid.{allowed}"
        return SettingsError(message, key_path=".".join([*parts, key]))
    if kind in (_INVALID, _UNSUPPORTED):
        message = str(ctx["detail"])
    elif kind in _BOUNDS:
        bound = next(iter(v for k, v in ctx.items() if k in ("gt", "ge", "lt", "le")))
        message = f"{value} is not valid: must be {_BOUNDS[kind]} {bound}."
    elif kind == "literal_error":
        message = f"{value} is not valid: expected {ctx['expected']}."
    elif kind in _TYPE_EXPECTATIONS:
        message = f"{value} is not valid: {_TYPE_EXPECTATIONS[kind]}."
    else:
        message = f"{value} is not valid: {error['msg']}."
    message = f"{path}: {message}" if path else message
    message = " ".join(message.split("\n"))
    cls = UnsupportedFeatureError if kind == _UNSUPPORTED else SettingsError
    return cls(message, key_path=path or None)
