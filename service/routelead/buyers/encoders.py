"""Request formats: turn a lead (through the compiled mapping) into a URL and a body.

A registry maps a format name (json, form, xml, query) to an encoder factory; each
encoder is compiled once at config load and is pure.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlencode

import orjson

from routelead.domain.mapping import (
    BodyBuilder,
    FieldKind,
    Getter,
    Mapper,
    Source,
    Transaction,
    as_text,
    getter,
)


class Encoder(Protocol):
    @property
    def content_type(self) -> str | None: ...

    def encode(self, url: str, fields: Mapping[str, str], tx: Transaction) -> tuple[str, bytes | None]: ...


@dataclass(frozen=True, slots=True)
class XmlOptions:
    root: str = "lead"
    declaration: bool = True


@dataclass(frozen=True, slots=True)
class JsonBody:
    builder: BodyBuilder
    content_type: str | None = "application/json"

    def encode(self, url: str, fields: Mapping[str, str], tx: Transaction) -> tuple[str, bytes | None]:
        return url, orjson.dumps(self.builder.build(fields, tx))


@dataclass(frozen=True, slots=True)
class FormBody:
    """application/x-www-form-urlencoded; keys are used exactly as written (no nesting)."""

    mapper: Mapper
    content_type: str | None = "application/x-www-form-urlencoded"

    def encode(self, url: str, fields: Mapping[str, str], tx: Transaction) -> tuple[str, bytes | None]:
        pairs = [(k, as_text(v)) for k, v in self.mapper.values(fields, tx)]
        return url, urlencode(pairs).encode()


@dataclass(frozen=True, slots=True)
class QueryString:
    """The values ride in the URL's query string (after any the URL already has); no body."""

    mapper: Mapper
    content_type: str | None = None

    def encode(self, url: str, fields: Mapping[str, str], tx: Transaction) -> tuple[str, bytes | None]:
        query = urlencode([(k, as_text(v)) for k, v in self.mapper.values(fields, tx)])
        if not query:
            return url, None
        return f"{url}{'&' if '?' in url else '?'}{query}", None


_XML_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]*$")


def xml_key(key: str) -> tuple[tuple[str, ...], str | None]:
    """`Contact/Phone` → element path; `Contact/@type` or `@version` → attribute; ValueError otherwise."""
    parts = key.split("/")
    attribute = parts.pop()[1:] if parts[-1].startswith("@") else None
    for name in [*parts, *([attribute] if attribute is not None else [])]:
        if not _XML_NAME.match(name):
            raise ValueError(f"{name!r} is not an XML element or attribute name")
    return tuple(parts), attribute


@dataclass(frozen=True, slots=True)
class XmlBody:
    """An XML document under `root`; slashes in keys nest wrapper elements, `@name` sets attributes."""

    root: str
    declaration: bool
    entries: tuple[tuple[tuple[str, ...], str | None, Getter], ...]
    content_type: str | None = "application/xml"

    @classmethod
    def compile(cls, mapping: Mapping[str, Source], kinds: Mapping[str, FieldKind], o: XmlOptions) -> XmlBody:
        xml_key(o.root)
        entries = tuple((*xml_key(key), getter(src, kinds)) for key, src in mapping.items())
        return cls(o.root, o.declaration, entries)

    def encode(self, url: str, fields: Mapping[str, str], tx: Transaction) -> tuple[str, bytes | None]:
        root = ET.Element(self.root)
        made: dict[tuple[str, ...], ET.Element] = {(): root}
        for path, attribute, get in self.entries:
            value = get(fields, tx)
            if value is None:
                continue
            node = root
            for depth in range(1, len(path) + 1):
                prefix = path[:depth]
                child = made.get(prefix)
                if child is None:
                    child = made[prefix] = ET.SubElement(node, path[depth - 1])
                node = child
            if attribute is None:
                node.text = as_text(value)
            else:
                node.set(attribute, as_text(value))
        return url, ET.tostring(root, encoding="utf-8", xml_declaration=self.declaration)


EncoderFactory = Callable[[Mapping[str, Source], Mapping[str, FieldKind], XmlOptions], Encoder]

ENCODERS: Mapping[str, EncoderFactory] = {
    "json": lambda mapping, kinds, o: JsonBody(BodyBuilder.compile(mapping, kinds)),
    "form": lambda mapping, kinds, o: FormBody(Mapper.compile(mapping, kinds)),
    "query": lambda mapping, kinds, o: QueryString(Mapper.compile(mapping, kinds)),
    "xml": XmlBody.compile,
}


def key_problem(fmt: str, keys: list[str]) -> list[tuple[str, str]]:
    """(key, why) for every key the format cannot express, or that collides with another."""
    out: list[tuple[str, str]] = []
    paths: dict[str, tuple[str, ...]] = {}
    for key in keys:
        if not key:
            out.append((key, "an empty key"))
            continue
        if fmt == "xml":
            try:
                parts, attribute = xml_key(key)
            except ValueError as exc:
                out.append((key, str(exc)))
                continue
            if attribute is None:
                paths[key] = parts
        elif fmt == "json":
            parts = tuple(key.split("."))
            if not all(parts):
                out.append((key, "an empty part in a dotted key"))
                continue
            paths[key] = parts
    # A value cannot sit where another key needs a wrapper element / nested object.
    leaves = {p: k for k, p in paths.items()}
    for key, parts in paths.items():
        for depth in range(1, len(parts)):
            if parts[:depth] in leaves:
                out.append((key, f"nests under {leaves[parts[:depth]]!r}, which is already a value"))
                break
    return out
