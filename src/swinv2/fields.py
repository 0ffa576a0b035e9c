"""Type checks of dataclass fields filled from JSON: a hand-edited ``config.json``, a weights file's
metadata, ``--model-overrides``. A wrong type is refused by field name at the boundary instead of
surfacing as a ``TypeError`` deep inside a model or loop."""

from __future__ import annotations

import dataclasses
import numbers
import types
import typing
from collections.abc import Mapping


def check_field_types(cls: type, values: Mapping[str, object], where: str) -> None:
    """``ValueError`` naming every field of dataclass ``cls`` whose value in ``values`` has the wrong type
    (JSON lists stand for tuples; ints for floats); names ``cls`` does not declare are left alone."""
    hints = _hints(cls)
    wrong = [
        f"{name} is {value!r:.60}, expected {_describe(hints[name])}"
        for name, value in values.items()
        if name in hints and not _matches(value, hints[name])
    ]
    if wrong:
        raise ValueError(f"{where}: {'; '.join(wrong)}")


def field_values(instance: object) -> dict[str, object]:
    """The dataclass ``instance``'s fields as given (no copies, unlike ``dataclasses.asdict``)."""
    return {f.name: getattr(instance, f.name) for f in dataclasses.fields(instance)}


_HINTS: dict[type, dict[str, object]] = {}


def _hints(cls: type) -> dict[str, object]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _matches(value: object, kind: object) -> bool:
    origin = typing.get_origin(kind)
    if origin in (types.UnionType, typing.Union):
        return any(_matches(value, k) for k in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    if kind is dict or origin is dict:
        return isinstance(value, dict)
    if kind is tuple or origin is tuple:
        return isinstance(value, (list, tuple)) and _items_match(value, typing.get_args(kind))
    return True  # annotations beyond these are not checked here


def _items_match(value: list | tuple, args: tuple) -> bool:
    if not args:
        return True
    if len(args) == 2 and args[1] is Ellipsis:
        return all(_matches(v, args[0]) for v in value)
    return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))


def _describe(kind: object) -> str:
    return kind.__name__ if isinstance(kind, type) else str(kind)
