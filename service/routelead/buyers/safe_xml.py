"""XML from buyers, parsed safely: no DTDs, so no entity expansion and no external entities."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import defusedxml
import defusedxml.ElementTree

from routelead.buyers.base import BadAnswer
from routelead.buyers.text import excerpt


def parse(body: bytes) -> ET.Element:
    """The root element with namespaces stripped from tags and attribute names, or BadAnswer.

    defusedxml refuses any DTD outright (forbid_dtd): buyer answers never need one, and
    every billion-laughs or XXE payload starts with one.
    """
    try:
        root = defusedxml.ElementTree.fromstring(body, forbid_dtd=True)
    except defusedxml.DefusedXmlException:
        raise BadAnswer("XML with a DTD or entity declarations refused") from None
    except ET.ParseError as exc:
        line, column = getattr(exc, "position", (0, 0))
        raise BadAnswer(f"invalid XML at line {line}, column {column}: {excerpt(body)}") from None
    for node in root.iter():
        node.tag = _local(node.tag)
        if any(k.startswith("{") for k in node.attrib):
            node.attrib = {_local(k): v for k, v in node.attrib.items()}
    return root


def _local(name: object) -> str:
    # "{urn:x}Status" → "Status"; SOAP-style answers are addressed by local names.
    text = str(name)
    return text.rsplit("}", 1)[1] if text.startswith("{") else text
