"""JSON buyers under their pre-issue-12 names; the endpoint and parsers now serve every format."""

from routelead.buyers.endpoint import Endpoint
from routelead.buyers.parsers import Match, PingParser, PostParser
from routelead.buyers.readers import JsonPath as Path
from routelead.buyers.text import MAX_TEXT, scrub

__all__ = ["MAX_TEXT", "Endpoint", "Match", "Path", "PingParser", "PostParser", "scrub"]
