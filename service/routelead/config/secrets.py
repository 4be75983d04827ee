"""Which `${VAR}`, `${VAR:-default}` and `${file:…}` references configuration may name.

Two trust levels, because the two sources of configuration are held by different people:

- The YAML file is the operator's. Whoever writes it deploys it beside the environment and the
  mounted files it names, so it may name any variable or file, except the service's own
  credentials and connection strings (`SERVICE_VARIABLES`, `service_files`): those are never a
  configuration value, from anywhere, so no mistake sends them to a buyer.
- A change over the Admin API is an admin-token holder's, who cannot read the process
  environment. Its references must be allowed by the operator at start (`SecretPolicy`: variable
  name prefixes, a secrets directory) or already be where the file put them (the same entity and
  field, `admin_problems`), so an admin can edit a buyer the file keys, and cannot send any other
  value the process can read to a URL of their choosing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

REF = re.compile(r"\$\{(?:file:(?P<file>[^}]+)|(?P<var>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?)\}")

# The service's own credentials and connection strings (passwords inside): never configuration.
SERVICE_VARIABLES = frozenset(
    {
        "ROUTELEAD_ADMIN_TOKEN",
        "ROUTELEAD_AUTH_TOKENS",
        "ROUTELEAD_DEDUPE_KEY",
        "ROUTELEAD_TOKEN",
        "ROUTELEAD_REDIS_URL",
        "REDIS_URL",
        "DATABASE_URL",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    }
)
# Settings that name the service's own files: never readable with ${file:…}.
SERVICE_FILE_VARIABLES = (
    "ROUTELEAD_TLS_KEY",
    "ROUTELEAD_TLS_CERT",
    "ROUTELEAD_TLS_CLIENT_CA",
    "ROUTELEAD_AUTH_TOKEN_FILE",
    "ROUTELEAD_ADMIN_TOKEN_FILE",
    "ROUTELEAD_DEDUPE_KEY_FILE",
    "ROUTELEAD_ADMIN_KEY_FILE",
    "ROUTELEAD_DB",
)
# An Admin change names none of the service's settings, whatever ROUTELEAD_SECRET_PREFIXES says.
ADMIN_NEVER_PREFIXES = ("ROUTELEAD_", "OTEL_")
DEFAULT_PREFIXES = ("BUYER_",)
# Directories that would open the whole machine (/proc/self/environ holds every variable).
_TOO_WIDE = (Path("/proc"), Path("/sys"), Path("/dev"))
_ENTITY_LISTS = ("buyers", "sources", "flows")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SecretPolicyError(ValueError):
    """ROUTELEAD_SECRET_PREFIXES or ROUTELEAD_SECRETS_DIR cannot be used as given."""


def _real(path: str) -> Path:
    """The path with every symbolic link and `..` resolved (it need not exist)."""
    return Path(os.path.realpath(path))


def service_files(env: Mapping[str, str]) -> dict[Path, str]:
    """The service's own files (resolved), each with the setting that names it."""
    found: dict[Path, str] = {}
    for name in SERVICE_FILE_VARIABLES:
        value = env.get(name)
        if isinstance(value, str) and value.strip():
            found[_real(value.strip())] = name
    return found


def service_refusal(match: re.Match[str], own_files: Mapping[Path, str]) -> str | None:
    """Why no configuration, the file included, may name this reference; None when it may."""
    var = match.group("var")
    if var is not None:
        return f"{var} is one of the service's own secrets" if var in SERVICE_VARIABLES else None
    setting = own_files.get(_real(match.group("file")))
    return f"it is the service's own {setting} file" if setting is not None else None


@dataclass(frozen=True, slots=True)
class SecretPolicy:
    """What a change made over the Admin API may name, as the operator allowed it at start."""

    prefixes: tuple[str, ...] = DEFAULT_PREFIXES
    directory: Path | None = None
    own_files: Mapping[Path, str] | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SecretPolicy:
        """ROUTELEAD_SECRET_PREFIXES (comma-separated; default BUYER_, empty: no variable) and
        ROUTELEAD_SECRETS_DIR (an absolute directory; unset: no file)."""
        # The ${VAR} machinery: references are checked against this environment, like the loader's.
        env = os.environ if env is None else env
        raw = env.get("ROUTELEAD_SECRET_PREFIXES")
        prefixes = DEFAULT_PREFIXES if raw is None else tuple(p.strip() for p in raw.split(",") if p.strip())
        for p in prefixes:
            if not _NAME.fullmatch(p):
                raise SecretPolicyError(f"ROUTELEAD_SECRET_PREFIXES: {p!r} cannot start a variable name")
        directory = None
        if given := (env.get("ROUTELEAD_SECRETS_DIR") or "").strip():
            if not Path(given).is_absolute():
                raise SecretPolicyError(f"ROUTELEAD_SECRETS_DIR: {given!r} is not an absolute path")
            directory = _real(given)
            if directory == Path(directory.anchor) or any(directory.is_relative_to(w) for w in _TOO_WIDE):
                raise SecretPolicyError(
                    f"ROUTELEAD_SECRETS_DIR: {given} would open files that are not secrets meant for buyers"
                )
        return cls(prefixes, directory, service_files(env))

    def refusal(self, match: re.Match[str]) -> str | None:
        """Why an Admin change may not name this reference; None when it may."""
        own = self.own_files or {}
        if why := service_refusal(match, own):
            return why
        var = match.group("var")
        if var is not None:
            if var.startswith(ADMIN_NEVER_PREFIXES):
                return f"{var} is one of the service's own settings"
            if not self.prefixes:
                return "ROUTELEAD_SECRET_PREFIXES allows no variable"
            if not var.startswith(self.prefixes):
                return f"ROUTELEAD_SECRET_PREFIXES allows variables starting with {', '.join(self.prefixes)}"
            return None
        path = match.group("file")
        if self.directory is None:
            return "files are allowed only under ROUTELEAD_SECRETS_DIR, which is not set"
        pure = PurePosixPath(path)
        if not pure.is_absolute():
            return "the path must be absolute"
        if ".." in pure.parts:
            return "the path may not contain '..'"
        if not _real(path).is_relative_to(self.directory):
            return f"it is not inside ROUTELEAD_SECRETS_DIR ({self.directory}) once links are resolved"
        return None


@dataclass(frozen=True, slots=True)
class Placed:
    """One reference in a document: where it is shown (`buyers[2].ping.headers.X-Key`), where it
    is (the same, with entities by id, so a reordered list does not move it), and its text."""

    shown: str
    place: str
    text: str
    match: re.Match[str]


def references(document: Any) -> Iterator[Placed]:
    yield from _walk(document, "", "")


def _walk(node: Any, shown: str, place: str) -> Iterator[Placed]:
    if isinstance(node, dict):
        for key, value in node.items():
            k = str(key)
            yield from _walk(value, f"{shown}.{k}" if shown else k, f"{place}.{k}" if place else k)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            where = f"{place}[{i}]"
            if place in _ENTITY_LISTS and isinstance(value, dict) and isinstance(value.get("id"), str):
                where = f"{place}[id={value['id']}]"
            yield from _walk(value, f"{shown}[{i}]", where)
    elif isinstance(node, str) and "${" in node:
        for match in REF.finditer(node):
            yield Placed(shown, place, match.group(0), match)


def admin_problems(document: Any, file_document: Any, policy: SecretPolicy) -> list[str]:
    """Every reference in a document an admin made that neither the policy allows nor the file it
    descends from names at the same place, each with its path."""
    from_file = {(r.place, r.text) for r in references(file_document)}
    problems = []
    for r in references(document):
        if (r.place, r.text) in from_file:
            continue
        if why := policy.refusal(r.match):
            problems.append(f"{r.shown}: {r.text} is not an allowed secret reference ({why})")
    return problems
