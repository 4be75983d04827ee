"""`routelead-client buyers list|get|put|delete|pause|resume`: buyers over the Admin API."""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

import yaml

from routelead_client.admin import ConfigVersion, RouteLeadAdmin, os_user
from routelead_client.cli_common import PROG, LocalError, admin_token, credentials, read_text, to_json
from routelead_client.errors import RouteLeadError


def add_parser(sub: Any, connection: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False, parents=[connection])
    common.add_argument("--token-file", help="file holding the admin token (else ROUTELEAD_ADMIN_TOKEN)")
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    change = argparse.ArgumentParser(add_help=False)
    change.add_argument("--reason", required=True, help="why: stored with the new version")
    change.add_argument("--author", default=os_user(), help="stored with the new version (default: you)")
    change.add_argument(
        "--expect", type=int, metavar="VERSION", help="refuse unless this version is live (no lost updates)"
    )

    buyers = sub.add_parser("buyers", help="list, show and change buyers (needs the admin token)")
    ops = buyers.add_subparsers(dest="op", required=True)
    ops.add_parser("list", parents=[common], help="the live configuration's buyer ids")
    ops.add_parser("get", parents=[common], help="one buyer as YAML (secrets masked)").add_argument("id")
    put = ops.add_parser(
        "put",
        parents=[common, change],
        help="insert or replace a buyer from a YAML or JSON file ('-': stdin)",
    )
    put.add_argument("file")
    for name, what in (("delete", "remove"), ("pause", "stop routing to"), ("resume", "route again to")):
        ops.add_parser(name, parents=[common, change], help=f"{what} a buyer").add_argument("id")


def parse_buyer_file(text: str) -> dict[str, Any]:
    """One buyer, YAML or JSON. Checked here only as far as needed to send it; the service validates
    the rest exactly as it does the file. Messages never quote values (they may be secrets)."""
    from routelead.config import model, yamltext

    try:
        doc = yamltext.load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise LocalError(f"not YAML or JSON: {exc.problem}{where}") from None
    except yaml.YAMLError:
        raise LocalError("not YAML or JSON") from None
    if not isinstance(doc, dict):
        raise LocalError("must hold one buyer: a mapping with an `id`")
    # Sent as JSON, a `yes` meant as text would arrive as true: settle it here, as the service's
    # file loader does.
    problems: list[str] = []
    doc = dict(yamltext.settle(doc, model.BuyerModel, problems))
    if problems:
        raise LocalError("; ".join(problems))
    if not isinstance(doc.get("id"), str) or not doc["id"]:
        raise LocalError("id: required, a string")
    return doc


def read_buyer_file(path: str) -> dict[str, Any]:
    text = read_text(path)  # its error names the path already
    try:
        return parse_buyer_file(text)
    except LocalError as exc:
        raise LocalError(f"{path}: {exc}") from None


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        # The file first: a bad one is reported before anything else is needed.
        body = read_buyer_file(args.file) if args.op == "put" else None
        token, creds = admin_token(args), credentials(args)
    except LocalError as exc:
        print(f"{PROG}: {exc}", file=err)
        return 2
    author = getattr(args, "author", None)
    with RouteLeadAdmin(
        args.target, token=token, credentials=creds, timeout_s=args.timeout, author=author
    ) as admin:
        try:
            match args.op:
                case "list":
                    ids = admin.list_buyers()
                    print(json.dumps(ids) if args.json else "\n".join(ids), file=out)
                case "get":
                    doc = admin.get_buyer(args.id)
                    out.write(
                        json.dumps(doc, indent=2) + "\n"
                        if args.json
                        else yaml.safe_dump(doc, sort_keys=False)
                    )
                case "put":
                    assert body is not None
                    _done(admin.put_buyer(body, args.reason, expected_version=args.expect), args, out)
                case "delete":
                    _done(admin.delete_buyer(args.id, args.reason, expected_version=args.expect), args, out)
                case "pause":
                    _done(admin.pause_buyer(args.id, args.reason, expected_version=args.expect), args, out)
                case "resume":
                    _done(admin.resume_buyer(args.id, args.reason, expected_version=args.expect), args, out)
        except RouteLeadError as exc:
            print(f"{PROG}: {exc}", file=err)
            return 1
    return 0


def _done(v: ConfigVersion, args: argparse.Namespace, out: TextIO) -> None:
    text = to_json(v) if args.json else f"v{v.version} is live: {v.reason} ({v.author})"
    print(text, file=out)
