"""Dataclass configs from plain mappings, strictly; and their defaults as plain mappings.

Every config of the project (the model, the data, the training loop, the evaluation, the env, the
rollouts during training) is a dataclass. The yaml files and command lines fill it through
`from_mapping`, which refuses what the dataclass does not declare: an unknown key (named, beside the known
ones) and a value of the wrong type (named, with the type expected), at any depth of nested dataclasses.

    settings = from_mapping(EvalSettings, {"num_chains": "abc"})   # ValueError: num_chains must be an integer, got 'abc'
    plain(settings)                                                 # back to dicts, lists and scalars

`plain(Config())` is also what the hydra apps register as the schema their yaml files build on
(harness/hydra_app.py), so that every default lives in its dataclass and nowhere else.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping, TypeVar, Union

T = TypeVar("T")
MISSING = "???"  # omegaconf's mark of a value the user must set


def from_mapping(cls: type[T], data: Any, where: str = "", renamed: Mapping[str, str] | None = None) -> T:
    """The dataclass `cls` from `data`, its values checked against the field types; nested dataclasses
    recursively. `where` names the config in messages ("model", "rollout.env"); `renamed` maps old key
    names to the setting that replaced them, for a message that says so."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where or cls.__name__}: expected a mapping of settings, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    for key in unknown:
        if renamed and key in renamed:
            raise ValueError(f"{_key(where, key)} is now {renamed[key]}")
    if unknown:
        raise ValueError(f"{where or cls.__name__}: unknown keys {unknown}; known keys are {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _convert(value, hints[name], _key(where, name)) for name, value in data.items()}
    return cls(**kwargs)


def plain(value: Any) -> Any:
    """Dataclasses, tuples and mappings as dicts and lists (what yaml, JSON and omegaconf hold)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def defaults_of(cls: type) -> dict[str, Any]:
    """The defaults of dataclass `cls` as plain values; a field without a default is `???` (to be set)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = plain(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = plain(f.default_factory())
        else:
            out[f.name] = MISSING
    return out


def _key(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _convert(value: Any, hint: Any, key: str) -> Any:
    """`value` as the type `hint` asks for, or a ValueError naming `key`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, key)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(errors[0] if len(errors) == 1 else f"{key}: got {value!r}, expected one of: " + "; ".join(errors))
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else from_mapping(hint, value, key)
    if origin is tuple or hint is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ValueError(f"{key} must be a list of {len(args)} values, got {list(value)!r}")
        return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args or [Any] * len(value))))
    if origin is list or hint is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key} must be a list, got {value!r}")
        return [_convert(v, args[0] if args else Any, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Mapping, typing.Mapping) or hint in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ValueError(f"{key} must be a mapping, got {value!r}")
        value_hint = args[1] if len(args) == 2 else Any
        return {k: _convert(v, value_hint, f"{key}.{k}") for k, v in value.items()}
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint in (bool, int, str):
        if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
            return value
    else:
        raise TypeError(f"{key}: strict_config cannot check values of type {hint!r}")
    raise ValueError(f"{key} must be {_NAMES[hint]}, got {value!r}")
