"""Turning :class:`~cryptoj.model.orders.OrderSpec` into JSON-able data and back, exactly.

Decimals become strings, datetimes ISO 8601 strings, enums their values. Decoding
is driven by the dataclass's type hints, so a field added to ``OrderSpec`` is
stored without touching this module.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from datetime import datetime
from decimal import Decimal
from enum import Enum
from functools import cache
from typing import Any

from cryptoj.errors import InvalidValue, StorageError
from cryptoj.model.money import parse_decimal
from cryptoj.model.orders import OrderSpec

__all__ = ["spec_from_json", "spec_to_json"]


def _encode(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


def spec_to_json(spec: OrderSpec) -> dict[str, Any]:
    """Every field of ``spec`` as JSON-able data (Decimals as strings)."""
    return {f.name: _encode(getattr(spec, f.name)) for f in dataclasses.fields(spec)}


@cache
def _spec_types() -> dict[str, tuple[type, ...]]:
    hints = typing.get_type_hints(OrderSpec)
    result: dict[str, tuple[type, ...]] = {}
    for name, hint in hints.items():
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            result[name] = tuple(t for t in typing.get_args(hint) if t is not type(None))
        else:
            result[name] = (hint,)
    return result


def _decode(name: str, value: Any, kinds: tuple[type, ...]) -> Any:
    if value is None:
        return None
    for kind in kinds:
        if kind is Decimal:
            return parse_decimal(value, f"spec.{name}", allow_negative=True)
        if kind is datetime:
            return datetime.fromisoformat(value)
        if isinstance(kind, type) and issubclass(kind, Enum):
            return kind(value)
    return value


def spec_from_json(data: dict[str, Any]) -> OrderSpec:
    """Rebuild an :class:`OrderSpec` stored by :func:`spec_to_json`."""
    kinds = _spec_types()
    unknown = sorted(set(data) - set(kinds))
    cid = data.get("client_order_id", "?")
    if unknown:
        raise StorageError(f"stored spec of order {cid} has unknown fields {unknown}")
    try:
        values = {name: _decode(name, value, kinds[name]) for name, value in data.items()}
        return OrderSpec(**values)
    except (InvalidValue, ValueError, TypeError) as exc:
        raise StorageError(f"stored spec of order {cid} is unusable: {exc}") from exc
