"""Answer formats: turn a buyer's HTTP body into a document and find values in it by path.

A registry maps a format name (json, xml, text, html) to a reader factory; the ping and
post parsers are the same for every format and only ask the reader for values.
"""

from __future__ import annotations

import enum
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from html.parser import HTMLParser
from typing import Protocol

import orjson

from routelead.buyers import safe_xml
from routelead.buyers.base import BadAnswer, HttpAnswer
from routelead.buyers.text import excerpt, scrub
from routelead.domain.patterns import Pattern, compile_pattern


class Missing(enum.Enum):
    MISSING = 0


MISSING = Missing.MISSING


class Locator(Protocol):
    """A compiled path: where one value sits in a document of its reader's format."""

    def get(self, doc: object) -> object: ...


class Reader(Protocol):
    def read(self, answer: HttpAnswer) -> object:
        """The answer body as a document; BadAnswer when it is not one."""
        ...

    def locate(self, path: str) -> Locator:
        """Compile a configured path; ValueError says why it cannot be one."""
        ...


# --- JSON ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JsonPath:
    """A dotted path into a JSON answer ("result.price"); digits index arrays."""

    parts: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> JsonPath:
        parts = tuple(text.split("."))
        if not all(parts):
            raise ValueError(f"{text!r} is not a dotted path like result.price")
        return cls(parts)

    def get(self, doc: object) -> object:
        node = doc
        for part in self.parts:
            if isinstance(node, dict):
                node = node.get(part, MISSING)
            elif isinstance(node, list) and part.isascii() and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return MISSING
            if node is MISSING:
                return MISSING
        return node

    def __str__(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True, slots=True)
class JsonReader:
    # Quoted keys of the paths the parser reads; see _refuse_duplicate_keys.
    watched: tuple[bytes, ...] = ()

    def read(self, answer: HttpAnswer) -> object:
        if not answer.body.strip():
            raise BadAnswer("empty answer")
        try:
            doc = orjson.loads(answer.body)
        except orjson.JSONDecodeError as exc:
            if answer.body.lstrip()[:1] == b"<":
                raise BadAnswer(f"HTML, not JSON: {excerpt(answer.body)}") from None
            if "UTF-8" in str(exc):
                raise BadAnswer("not valid UTF-8") from None
            raise BadAnswer(f"invalid JSON: {excerpt(answer.body)}") from None
        if not isinstance(doc, dict):
            raise BadAnswer(f"answer is a JSON {type_name(doc)}, not an object")
        _refuse_duplicate_keys(answer.body, self.watched)
        return doc

    def locate(self, path: str) -> Locator:
        return JsonPath.parse(path)

    @staticmethod
    def exact(answer: HttpAnswer, where: Locator, value: object) -> object:
        """A money value as the digits the buyer sent. orjson reads every JSON number with a
        fraction as a float, exact only up to 15 significant digits; when the body holds a longer
        number, the value at `where` is read again by the stdlib parser as a Decimal. The byte scan
        keeps this off the common path (prices like 45.10)."""
        if not isinstance(value, float) or _LONG_NUMBER.search(answer.body) is None:
            return value
        return where.get(json.loads(answer.body, parse_float=Decimal))


# Sixteen or more digits and dots in a row: a number a float may not hold exactly (or a long id
# in a string, which only costs the exact re-read).
_LONG_NUMBER = re.compile(rb"[0-9][0-9.]{15}")


def _refuse_duplicate_keys(body: bytes, watched: tuple[bytes, ...]) -> None:
    """orjson keeps the last of two equal keys, so `"price": 1, "price": 1000` would read as 1000.
    An answer that says two things is refused. The byte count keeps this off the common path."""
    if not any(body.count(needle) > 1 for needle in watched):
        return

    def pairs(items: list[tuple[str, object]]) -> dict[str, object]:
        seen: set[str] = set()
        for key, _ in items:
            if key in seen:
                raise BadAnswer(f"duplicate key {scrub(key, 40)!r} in answer")
            seen.add(key)
        return dict(items)

    json.loads(body, object_pairs_hook=pairs)


def watching(reader: Reader, paths: Iterable[Locator | None]) -> Reader:
    """The reader, told which JSON keys decide the outcome (so a repeat of one is refused)."""
    if not isinstance(reader, JsonReader):
        return reader
    needles = {f'"{part}"'.encode() for p in paths if isinstance(p, JsonPath) for part in p.parts}
    return JsonReader(tuple(sorted(needles)))


# --- XML -------------------------------------------------------------------------------

_XML_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True, slots=True)
class XmlPath:
    """`Bid/Price` (from the root element), `/Response/Bid/Price` (naming the root),
    `Bid/@amount` (an attribute), `.` or `@id` (the root itself)."""

    text: str
    root: str | None
    parts: tuple[str, ...]
    attribute: str | None

    @classmethod
    def parse(cls, text: str) -> XmlPath:
        body = text.strip()
        if not body:
            raise ValueError("an empty path; use . for the root element")
        root = None
        if body.startswith("/"):
            root, _, body = body[1:].partition("/")
        parts = [p for p in body.split("/") if p not in ("", ".")]
        attribute = parts.pop()[1:] if parts and parts[-1].startswith("@") else None
        for name in [
            *parts,
            *([root] if root is not None else []),
            *([attribute] if attribute is not None else []),
        ]:
            if not _XML_NAME.match(name):
                raise ValueError(f"{text!r}: {name!r} is not an XML element or attribute name")
        return cls(text, root, tuple(parts), attribute)

    def get(self, doc: object) -> object:
        if not isinstance(doc, ET.Element):
            return MISSING
        if self.root is not None and doc.tag != self.root:
            return MISSING
        node = doc
        for part in self.parts:
            child = node.find(part)
            if child is None:
                return MISSING
            node = child
        if self.attribute is not None:
            value = node.get(self.attribute)
            return MISSING if value is None else value
        return node

    def __str__(self) -> str:
        return self.text


class XmlReader:
    def read(self, answer: HttpAnswer) -> object:
        if not answer.body.strip():
            raise BadAnswer("empty answer")
        return safe_xml.parse(answer.body)

    def locate(self, path: str) -> Locator:
        return XmlPath.parse(path)


# --- Text and HTML -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Name:
    """A named piece of a text answer: a regex group, a delimited column, or `text` (all of it)."""

    name: str

    def get(self, doc: object) -> object:
        return doc.get(self.name, MISSING) if isinstance(doc, dict) else MISSING

    def __str__(self) -> str:
        return self.name


_BLOCKS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "br",
        "dd",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "td",
        "th",
        "title",
        "tr",
        "ul",
    ]
)


class _VisibleText(HTMLParser):
    """The text a browser would show: tags dropped, entities decoded, scripts and styles skipped,
    block elements apart."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._hidden += 1
        elif tag in _BLOCKS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._hidden:
            self._hidden -= 1
        elif tag in _BLOCKS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def visible_text(html: str) -> str:
    parser = _VisibleText()
    parser.feed(html)
    parser.close()
    return " ".join("".join(parser.parts).split())


@dataclass(frozen=True, slots=True)
class TextReader:
    """Plain text or HTML read by a regex with named groups, by a delimiter and columns
    (`accepted|ABC123|45.00`), or whole (`text`)."""

    html: bool = False
    pattern: Pattern | None = None
    delimiter: str | None = None
    columns: tuple[str | None, ...] = ()

    def names(self) -> frozenset[str]:
        if self.pattern is not None:
            return frozenset([*self.pattern.groupindex, "text"])
        return frozenset([*(c for c in self.columns if c), "text"])

    def read(self, answer: HttpAnswer) -> object:
        raw = answer.body.decode("utf-8", "replace")
        text = visible_text(raw) if self.html else raw.strip()
        if not text:
            raise BadAnswer("empty answer")
        doc: dict[str, str] = {"text": text}
        if self.pattern is not None:
            found = self.pattern.search(text)
            if found is None:
                raise BadAnswer(f"answer does not match the configured pattern: {excerpt(text.encode())}")
            doc.update({k: v.strip() for k, v in found.groupdict().items() if v is not None})
        elif self.delimiter is not None:
            cells = text.split(self.delimiter)
            doc.update({n: cells[i].strip() for i, n in enumerate(self.columns) if n and i < len(cells)})
        return doc

    def locate(self, path: str) -> Locator:
        if path not in self.names():
            known = ", ".join(sorted(self.names()))
            raise ValueError(f"{path!r} is not a named group or column of this answer (known: {known})")
        return Name(path)


# --- Registry ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextOptions:
    pattern: str | None = None
    delimiter: str | None = None
    columns: tuple[str | None, ...] = ()


def _text_reader(html: bool) -> Callable[[TextOptions], Reader]:
    def build(o: TextOptions) -> Reader:
        pattern = None
        if o.pattern is not None:
            pattern = compile_pattern(o.pattern)  # PatternError is a ValueError
            if not pattern.groupindex:
                raise ValueError("the pattern needs named groups, e.g. (?P<status>accepted|rejected)")
        return TextReader(html, pattern, o.delimiter, o.columns)

    return build


READERS: Mapping[str, Callable[[TextOptions], Reader]] = {
    "json": lambda o: JsonReader(),
    "xml": lambda o: XmlReader(),
    "text": _text_reader(html=False),
    "html": _text_reader(html=True),
}


def type_name(value: object) -> str:
    if isinstance(value, ET.Element):
        return "element with children"
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )
