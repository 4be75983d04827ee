"""`routelead admin …`: the Admin API from the command line (token from ROUTELEAD_ADMIN_TOKEN)."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import orjson
import yaml

from routelead.api.admin_channel import add_connection_options, admin_channel
from routelead.cli.common import fail, over_admin_api
from routelead.v1 import admin_pb2 as pb

if TYPE_CHECKING:  # grpc loads only when an admin command runs (`serve` forks workers first)
    from routelead.settings import Settings
    from routelead.v1 import admin_pb2_grpc as pb_grpc

_KINDS = {"buyer": pb.BUYER, "source": pb.SOURCE, "flow": pb.FLOW, "lead_type": pb.LEAD_TYPE}


def add_parsers(sub: Any, settings: Settings) -> None:
    admin = sub.add_parser("admin", help="live configuration: versions, entities, pause, diff, rollback")
    add_connection_options(admin, settings)
    admin.add_argument("--author", default=settings.admin_author or _user())
    admin.add_argument("--expect", type=int, default=0, help="refuse unless this version is live")
    admin.set_defaults(run=run)
    ops = admin.add_subparsers(dest="op", required=True)
    ops.add_parser("versions", help="list versions, newest first")
    export = ops.add_parser("export", help="a version as YAML (default: the live one)")
    export.add_argument("version", type=int, nargs="?", default=0)
    diff = ops.add_parser("diff", help="unified diff between two versions")
    diff.add_argument("from_version", type=int)
    diff.add_argument("to_version", type=int)
    rollback = ops.add_parser("rollback", help="make an earlier version live again (as a new version)")
    rollback.add_argument("version", type=int)
    rollback.add_argument("--reason", required=True)
    listing = ops.add_parser("list", help="buyers, sources, flows or lead types of the live version")
    listing.add_argument("kind", choices=list(_KINDS))
    get = ops.add_parser("get")
    get.add_argument("kind", choices=list(_KINDS))
    get.add_argument("id")
    upsert = ops.add_parser(
        "upsert", help="insert or replace one entity from a YAML or JSON file ('-': stdin)"
    )
    upsert.add_argument("kind", choices=list(_KINDS))
    upsert.add_argument("file")
    upsert.add_argument("--reason", required=True)
    delete = ops.add_parser("delete")
    delete.add_argument("kind", choices=list(_KINDS))
    delete.add_argument("id")
    delete.add_argument("--reason", required=True)
    for name in ("pause", "resume"):
        p = ops.add_parser(name, help=f"{name} a buyer")
        p.add_argument("buyer_id")
        p.add_argument("--reason", required=True)
    # A change's own options also after the operation (`admin upsert … --expect 7`), as printed
    # in the README; before it they still work. SUPPRESS: an absent one keeps the outer value.
    for change in (rollback, upsert, delete, *(ops.choices[n] for n in ("pause", "resume"))):
        change.add_argument(
            "--expect", type=int, default=argparse.SUPPRESS, help="refuse unless this version is live"
        )
        change.add_argument("--author", default=argparse.SUPPRESS)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def run(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    if args.op == "upsert":
        # Read before any network call: a bad file is a local error, said in one line.
        body = _entity_json(args.file, args.kind)
        if body is None:
            return 2
        args.body = body
    return over_admin_api(settings, lambda token: _call(args, token, out or sys.stdout))


def _entity_json(path: str, kind: str) -> str | None:
    """The entity file as the JSON the Admin API takes, or None once its problems are printed."""
    from routelead.config import model, yamltext

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        doc = yamltext.load(text)
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
        return None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        fail(f"{path}: not YAML or JSON{at}")
        return None
    if not isinstance(doc, dict):
        fail(f"{path}: must hold one mapping (the {kind})")
        return None
    # Sent as JSON, a `yes` meant as text would arrive as true: settle it here, as the file loader does.
    problems: list[str] = []
    entities: dict[str, type[model.Strict]] = {
        "buyer": model.BuyerModel,
        "source": model.SourceModel,
        "flow": model.FlowModel,
        "lead_type": model.LeadTypeModel,
    }
    doc = yamltext.settle(doc, entities[kind], problems)
    for problem in problems:
        fail(f"{path}: {problem}")
    return None if problems else orjson.dumps(doc, default=str).decode()


async def _call(args: argparse.Namespace, token: str, out: TextIO) -> int:
    from routelead.v1 import admin_pb2_grpc as pb_grpc

    meta = (("authorization", f"Bearer {token}"),)
    change = pb.Change(author=args.author, reason=getattr(args, "reason", ""), expected_version=args.expect)
    async with admin_channel(args) as channel:
        stub = pb_grpc.AdminStub(channel)
        match args.op:
            case "versions":
                listed = await stub.ListVersions(pb.ListVersionsRequest(), metadata=meta, timeout=10)
                for v in listed.versions:
                    live = "*" if v.version == listed.live else " "
                    print(f"{live} v{v.version:<4} {v.created_at}  {v.author:<20} {v.reason}", file=out)
            case "export":
                exported = await stub.ExportVersion(
                    pb.ExportVersionRequest(version=args.version), metadata=meta
                )
                v = exported.version
                print(f"# version {v.version} by {v.author}: {v.reason}", file=out)
                out.write(exported.yaml)
            case "diff":
                d = await stub.DiffVersions(
                    pb.DiffVersionsRequest(from_version=args.from_version, to_version=args.to_version),
                    metadata=meta,
                )
                out.write(d.unified_diff or "(no difference)\n")
            case "list":
                listed_e = await stub.ListEntities(
                    pb.ListEntitiesRequest(kind=_KINDS[args.kind]), metadata=meta
                )
                for e in listed_e.entities:
                    print(e.id, file=out)
            case "get":
                e = await stub.GetEntity(
                    pb.GetEntityRequest(kind=_KINDS[args.kind], id=args.id), metadata=meta
                )
                out.write(yaml.safe_dump(orjson.loads(e.json), sort_keys=False))
            case _:
                done = await _change(stub, args, change, meta)
                print(
                    f"v{done.version.version} is live: {done.version.reason} ({done.version.author})",
                    file=out,
                )
    return 0


async def _change(
    stub: pb_grpc.AdminStub, args: argparse.Namespace, change: pb.Change, meta: Any
) -> pb.ChangeResponse:
    response: pb.ChangeResponse
    match args.op:
        case "rollback":
            response = await stub.Rollback(
                pb.RollbackRequest(to_version=args.version, change=change), metadata=meta
            )
        case "upsert":
            request = pb.UpsertEntityRequest(kind=_KINDS[args.kind], json=args.body, change=change)
            response = await stub.UpsertEntity(request, metadata=meta)
        case "delete":
            response = await stub.DeleteEntity(
                pb.DeleteEntityRequest(kind=_KINDS[args.kind], id=args.id, change=change), metadata=meta
            )
        case "pause" | "resume":
            request_p = pb.SetBuyerPausedRequest(
                buyer_id=args.buyer_id, paused=args.op == "pause", change=change
            )
            response = await stub.SetBuyerPaused(request_p, metadata=meta)
        case _:
            raise SystemExit(f"routelead: unknown admin operation {args.op!r}")
    return response
