"""YAML read so that a word meant as text cannot silently become a boolean.

YAML 1.1 (PyYAML, and many other tools that will read the same file) takes `yes`, `no`, `on`,
`off`, `true` and `false`, unquoted and in any of their usual casings, as booleans. In a place that
takes text, that changes the meaning without a word: `bid: {path: decision, values: [yes]}` matches
the JSON `true`, never the answer `"yes"`, so every bid reads as no bid. So the loader keeps each
boolean's original spelling (`Flag`) and `settle` walks the document beside the configuration
model's types:

- where only a boolean fits (`required: yes`), it is that boolean, however it is spelt;
- where text fits too (`values`, `enum`, `map`, a static `value`, rules), `true` and `false` stay
  booleans when a boolean also fits; any other spelling, and any boolean where only text fits, is
  a problem naming the path and the fix: quote it.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Any

import yaml
from pydantic import BaseModel


class Flag:
    """A YAML boolean as the file wrote it."""

    __slots__ = ("text", "value")

    def __init__(self, value: bool, text: str) -> None:
        self.value = value
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Flag) and (self.value, self.text) == (other.value, other.text)

    def __hash__(self) -> int:
        return hash((self.value, self.text))

    def __repr__(self) -> str:
        return f"Flag({self.text})"


class _Loader(yaml.SafeLoader):
    pass


def _construct_bool(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Flag:
    return Flag(bool(loader.construct_yaml_bool(node)), str(node.value))


_Loader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)


def load(text: bytes | str) -> Any:
    """Like `yaml.safe_load`, with every boolean a `Flag` until `settle` decides what it is."""
    return yaml.load(text, Loader=_Loader)  # a SafeLoader: plain data, never objects


def settle(node: Any, model: type[BaseModel], problems: list[str]) -> Any:
    """`node` with every Flag turned into a boolean or, where it was meant as text, reported."""
    return _settle(node, model, "", problems)


def _settle(node: Any, tp: Any, path: str, problems: list[str]) -> Any:
    if isinstance(node, Flag):
        return _flag(node, tp, path, problems)
    if isinstance(node, list):
        item = _item_type(tp)
        return [_settle(v, item, f"{path}[{i}]", problems) for i, v in enumerate(node)]
    if isinstance(node, dict):
        key_type, value_type = _entry_types(tp)
        out: dict[Any, Any] = {}
        for k, v in node.items():
            key = _flag(k, key_type, _join(path, k.text), problems) if isinstance(k, Flag) else k
            out[key] = _settle(v, value_type(str(key)), _join(path, key), problems)
        return out
    return node


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _flag(f: Flag, tp: Any, path: str, problems: list[str]) -> Any:
    kinds = _kinds(tp)
    if not kinds & {"str", "any"}:
        return f.value  # a boolean, or a place neither text nor boolean fits (validation says so)
    takes_bool = bool(kinds & {"bool", "any"})
    if takes_bool and f.text.lower() in ("true", "false"):
        return f.value
    if takes_bool:
        problems.append(
            f"{path}: YAML reads {f.text} as the boolean {str(f.value).lower()}; for the text, "
            f"quote it: '{f.text}'; for a boolean, write {str(f.value).lower()}"
        )
    else:
        problems.append(f"{path}: YAML reads {f.text} as a boolean, not text; quote it: '{f.text}'")
    return f.text  # reported once, here; validation goes on with what was meant


def _options(tp: Any) -> list[Any]:
    """The alternatives a type admits, Annotated and unions unwrapped."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _options(typing.get_args(tp)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [o for arg in typing.get_args(tp) for o in _options(arg)]
    return [tp]


def _kinds(tp: Any) -> set[str]:
    kinds = set()
    for o in _options(tp):
        if o is Any:
            kinds.add("any")
        elif o is bool:
            kinds.add("bool")
        elif o is str or (
            typing.get_origin(o) is typing.Literal and any(isinstance(a, str) for a in typing.get_args(o))
        ):
            kinds.add("str")
    return kinds


def _item_type(tp: Any) -> Any:
    for o in _options(tp):
        if o is Any:
            return Any
        if typing.get_origin(o) in (list, tuple, set, frozenset):
            args = typing.get_args(o)
            return args[0] if args else Any
    return None


def _entry_types(tp: Any) -> tuple[Any, Any]:
    """(key type, key → value type) for a mapping at this place."""
    for o in _options(tp):
        if o is Any:
            return Any, lambda key: Any
        if isinstance(o, type) and issubclass(o, BaseModel):
            fields = {(f.alias or name): f.annotation for name, f in o.model_fields.items()}
            return str, fields.get
        if typing.get_origin(o) is dict:
            key_type, value_type = typing.get_args(o) or (Any, Any)
            return key_type, _always(value_type)
    return None, _always(None)


def _always(tp: Any) -> Callable[[str], Any]:
    return lambda key: tp
