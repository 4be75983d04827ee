"""Every ```sh block of the README runs, as printed, so the README cannot drift from the code.

Each block is either run by a scene below — real `routelead` processes from this venv, on
throwaway books, against the servers the block expects — or listed in SKIPPED with the reason it
cannot run on one machine. A new block fails `test_every_sh_block_is_run_or_skipped` until it is
given a scene or a reason; an entry no block matches fails it too.

What the runner changes in a block, and only this: `.venv/bin/` is this venv's bin directory
(`python3 -m venv .venv && .venv/bin/pip install …` is how this venv was made: checked, not rerun)
and is first on PATH (bare `routelead` resolves as in an activated venv); the README's `…` for
the admin token is the scene's token. The environment carries what the user's would: API keys
for the example config, `ROUTELEAD_DB` in a temporary directory so nothing lands in the checkout.
Blocks that write files (`> sunpower.yaml`) run in a temporary working directory.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from routelead.records.codec import AttemptRecord, LeadRecord, SaleRecord
from routelead.records.ledger import Ledger
from routelead_client import RouteLeadAdmin

from tests.servers import wait_answering
from tests.tls import make_pki

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
EXAMPLE = ROOT / "service" / "routelead" / "examples" / "solar.yaml"
TOKEN = "readme-admin-token-0123456789"
KEYS = {"SUNPOWER_API_KEY": "x", "SOLARCITY_API_KEY": "y"}
VENV_SETUP = re.compile(r"^python3 -m venv \.venv && \.venv/bin/pip install -q -e (\S+) && ")

# First line of a block (comments and a trailing backslash dropped) → why it is not run here.
SKIPPED = {
    "routelead suppress load dnc.txt --list dnc": "needs a running service with an admin token; "
    "tests/test_suppression.py runs `routelead suppress load|remove|list` against one",
    "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/pytest": (
        "the whole suite: run from inside itself it would recurse; .ci/run runs this line verbatim (checked)"
    ),
    "grpcurl -plaintext -d": "grpcurl (a Go binary) is not installed here; the routelead-client block "
    "after it makes the same call and is run",
    'grpcurl -plaintext -H "authorization: Bearer $ROUTELEAD_ADMIN_TOKEN"': "grpcurl is not installed "
    "here; the same GetStats is run by `routelead-client stats` in the client block",
    "grpcurl -cacert ca.pem": "grpcurl, against a deployed service (routelead.example) with its CA",
    "docker build -f deploy/Dockerfile": "needs a container runtime and a Kubernetes cluster; "
    "tests/test_deploy.py renders and validates the manifests instead",
    "openssl req -x509": "creates a Secret in a Kubernetes cluster",
    "routelead settle <buyer> <reservation> --confirm": "placeholders for a real unknown post; "
    "tests/test_exactly_once.py and tests/records/test_settle_books.py run these very commands on one",
    "routelead unsettled --older-than 30": "needs REDIS_URL and the ids of real unsettled reservations "
    "(`<reservation>`), which only a post that timed out after sending leaves",
}


@dataclass(frozen=True, slots=True)
class Block:
    line: int
    text: str

    @property
    def head(self) -> str:
        first = next(x for x in self.text.splitlines() if x.strip())
        return re.sub(r"\s+#.*$|\s*\\$", "", first).strip()


def sh_blocks() -> list[Block]:
    lines = README.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        if re.match(r"^\s*```sh\s*$", lines[i]):
            indent = len(lines[i]) - len(lines[i].lstrip())
            j = i + 1
            while not re.match(r"^\s*```\s*$", lines[j]):
                j += 1
            out.append(Block(i + 1, "\n".join(x[indent:] for x in lines[i + 1 : j])))
            i = j
        i += 1
    return out


def block(prefix: str) -> Block:
    [found] = [b for b in sh_blocks() if b.head.startswith(prefix)]
    return found


def user_env(tmp: Path, **extra: str) -> dict[str, str]:
    drop = ("DATABASE_URL", "ROUTELEAD_DB", "REDIS_URL", "ROUTELEAD_REDIS_URL", "ROUTELEAD_ADMIN_TOKEN")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("ROUTELEAD_ADMIN")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    (tmp / "books").mkdir(exist_ok=True)
    return {**env, "ROUTELEAD_DB": str(tmp / "books" / "routelead.db"), **extra}


def script(b: Block, subs: dict[str, str] | None = None) -> str:
    text = b.text.replace(".venv/bin/", f"{BIN}/")
    for old, new in (subs or {}).items():
        assert old in text, f"README line {b.line}: expected {old!r} in the block"
        text = text.replace(old, new)
    return "set -euo pipefail\n" + text


def run(b: Block, cwd: Path, env: dict[str, str], subs: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["bash", "-c", script(b, subs)], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, f"README line {b.line}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@contextmanager
def background(command: str, cwd: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        _end_group(proc)


def _end_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the block's whole process group (`serve` drains, then exits); SIGKILL after 15 s."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    give_up = time.monotonic() + 15
    with suppress(ProcessLookupError):
        while True:
            proc.poll()  # reap the shell
            os.killpg(proc.pid, 0)  # raises once no process of the group is left
            if time.monotonic() > give_up:
                os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(0.05)


def port_free(port: int, host: str = "127.0.0.1") -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            pytest.fail(f"port {port} is taken; the README's commands use it (stop whatever holds it)")


async def until_listening(port: int, proc: subprocess.Popen[bytes], within_s: float = 60) -> None:
    give_up = time.monotonic() + within_s
    while True:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"exited {proc.returncode}: {err[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert time.monotonic() < give_up, f"nothing listened on {port} within {within_s} s"
        await asyncio.sleep(0.1)


@contextmanager
def admin_service(tmp: Path, live_version: int) -> Iterator[dict[str, str]]:
    """`routelead serve` of the example config with an admin token on 127.0.0.1:50051, its live
    configuration at `live_version` (the README's version numbers), books in `tmp`."""
    port_free(50051)
    env = user_env(tmp, ROUTELEAD_ADMIN_TOKEN=TOKEN, **KEYS)
    cmd = f"exec {BIN}/routelead serve --config {EXAMPLE} --listen 127.0.0.1:50051"
    with background(cmd, ROOT, env) as proc:
        asyncio.run(wait_answering(50051, proc))
        with RouteLeadAdmin("127.0.0.1:50051", token=TOKEN) as admin:
            for n in range(live_version - 1):
                change = admin.pause_buyer if n % 2 == 0 else admin.resume_buyer
                change("brightpath", f"warming up the README's version numbers ({n})")
            assert admin.live_version() == live_version
        yield user_env(tmp, **KEYS)


def _the_quick_start_demo(tmp: Path) -> None:
    b = block("python3 -m venv .venv && .venv/bin/pip install -q -e . &&")
    setup = VENV_SETUP.match(b.text)
    assert setup is not None and setup.group(1) == "."
    import routelead

    # What the skipped prefix would have made: this venv, with this checkout installed editable.
    assert (BIN / "routelead").exists() and Path(routelead.__file__).is_relative_to(ROOT)
    rest = Block(b.line, b.text[setup.end() :])
    env = user_env(tmp)
    del env["ROUTELEAD_DB"]  # the user has not pointed the books anywhere: the demo's own choice

    out = run(rest, ROOT, env)

    assert "SOLD to" in out and "try `ROUTELEAD_DB=" in out


def _serve_and_route_with_the_client(tmp: Path) -> None:
    start, call = block(".venv/bin/routelead buyers-sim &"), block("cat > lead.json <<'EOF'")
    port_free(50051)
    port_free(8700)
    with background(script(start) + "\nwait", ROOT, user_env(tmp)) as proc:
        asyncio.run(until_listening(8700, proc))
        asyncio.run(wait_answering(50051, proc))

        out = run(call, tmp, user_env(tmp))

    assert "SOLD" in out or "UNSOLD" in out, out


def _serve_off_loopback_with_tls_and_tokens(tmp: Path) -> None:
    b = block("routelead serve --config flows.yaml --listen 0.0.0.0:50051")
    port_free(50051, "0.0.0.0")
    (tmp / "flows.yaml").write_bytes(EXAMPLE.read_bytes())
    pki = make_pki(tmp)
    # What Operations asks for off loopback: TLS and caller tokens (the deployment sets these).
    env = user_env(
        tmp,
        ROUTELEAD_TLS_CERT=str(pki.server_cert),
        ROUTELEAD_TLS_KEY=str(pki.server_key),
        ROUTELEAD_AUTH_TOKENS="readme-caller-token-0123456789",
        **KEYS,
    )
    proc = subprocess.Popen(
        ["bash", "-c", script(b).replace("set -euo pipefail\n", "exec ")],
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        creds = grpc.ssl_channel_credentials(pki.read("ca"))
        give_up = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            try:
                with grpc.secure_channel(
                    "localhost:50051", creds, options=[("grpc.ssl_target_name_override", "localhost")]
                ) as ch:
                    got = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if got.status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            assert time.monotonic() < give_up, "serve did not become healthy"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)  # "… then exits 0"
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert out.startswith(b"{")  # JSON logs on stdout


def _the_client_admin_commands(tmp: Path) -> None:
    b = block("export ROUTELEAD_TARGET=127.0.0.1:50051 ROUTELEAD_ADMIN_TOKEN=…")
    with admin_service(tmp, 7) as env:
        out = run(b, tmp, env, {"ROUTELEAD_ADMIN_TOKEN=…": f"ROUTELEAD_ADMIN_TOKEN={TOKEN}"})
    assert "sunpower" in out and "v8" in out and "v9" in out, out
    assert yaml.safe_load((tmp / "sunpower.yaml").read_text())["id"] == "sunpower"


def _the_admin_commands(tmp: Path) -> None:
    b = block("export ROUTELEAD_ADMIN_TOKEN=… ROUTELEAD_ADMIN_TARGET=127.0.0.1:50051")
    with admin_service(tmp, 6) as env:
        out = run(b, tmp, env, {"ROUTELEAD_ADMIN_TOKEN=…": f"ROUTELEAD_ADMIN_TOKEN={TOKEN}"})
    assert "v7 is live: asked for a break" in out and "v8 is live: new bid floor" in out, out
    assert "v9 is live: rollback to v7: undo" in out
    assert "paused:" in (tmp / "sunpower.yaml").read_text()
    assert (tmp / "live.yaml").read_text().startswith("# version 9")


async def _books(tmp: Path, records: list[LeadRecord]) -> None:
    """The books `routelead` finds through user_env's ROUTELEAD_DB, holding these records."""
    (tmp / "books").mkdir(exist_ok=True)
    ledger = await Ledger.open(f"sqlite:///{tmp / 'books' / 'routelead.db'}")
    try:
        await ledger.apply(records)
    finally:
        await ledger.close()


def _a_sold_lead(lead_id: str, at: float) -> LeadRecord:
    """sunpower bought it; slowsun's post timed out after sending (unsettled)."""
    sales = (
        SaleRecord(
            lead_id,
            "sunpower",
            Decimal("42.83"),
            "SP-1",
            False,
            "premium",
            "sold",
            at,
            "solar",
            "aff-sunrise",
            cost=Decimal("5.75"),
        ),
        SaleRecord(
            lead_id,
            "slowsun",
            Decimal("36.23"),
            "",
            False,
            "standard",
            "unsettled",
            at,
            "solar",
            "aff-sunrise",
            cost=Decimal("4.25"),
        ),
    )
    return LeadRecord(
        lead_id=lead_id,
        flow="solar",
        source_id="aff-sunrise",
        config_version="v1",
        received_at=at - 0.3,
        answered_at=at,
        outcome="SOLD",
        test=False,
        cost=Decimal("10.00"),
        revenue=Decimal("42.83"),
        elapsed_ms=293.0,
        trace_id="0" * 31 + "1",
        ping_fields={"state": "TX", "zip": "73301"},
        attempts=(
            AttemptRecord(
                0, "sunpower", "premium", "POST_ACCEPTED", Decimal("42.83"), 47.0, 20.0, 200, "sold at 42.83"
            ),
            AttemptRecord(
                1,
                "slowsun",
                "standard",
                "POST_ERROR",
                Decimal("36.23"),
                220.0,
                150.0,
                0,
                "post timed out; outcome unknown, held against the cap until settled",
            ),
        ),
        sales=sales,
    )


def _the_books_commands(tmp: Path) -> None:
    b = block("routelead migrate")
    lead_id = "4f17ea76fe23" + "0b9c4d2e8a1f7b3c6d5e9f01"
    asyncio.run(_books(tmp, [_a_sold_lead(lead_id, time.time())]))
    doc = yaml.safe_load(EXAMPLE.read_text())
    for x in doc["buyers"]:
        if x["id"] == "sunpower":
            x["returns"] = {"days": 7, "max_rate_percent": 100}  # the README's own example terms, loosened
    (tmp / "flows.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))

    out = run(b, tmp, user_env(tmp, **KEYS))

    assert f"lead {lead_id}" in out and "POST_ACCEPTED" in out
    # sales returns gross-rev net-rev gross-cost net-cost net-margin disputes
    assert re.search(r"^sunpower\s+1\s+0\s+42\.83\s+42\.83\s+5\.75\s+5\.75\s+37\.08\s+0$", out, re.M), out
    assert "returned: revenue -42.83" in out and "settlement: sold" in out


def _the_replay(tmp: Path) -> None:
    b = block("routelead replay --config candidate.yaml")
    recorded = datetime(2026, 11, 3, 15, tzinfo=UTC).timestamp()
    asyncio.run(_books(tmp, [_a_sold_lead("R-1", recorded)]))
    (tmp / "candidate.yaml").write_bytes(EXAMPLE.read_bytes())

    out = run(b, tmp, user_env(tmp))  # "`${VAR}` secrets need not be set"

    assert out.startswith("replay of 1 recorded leads"), out


Scene = Callable[[Path], None]
SCENES: dict[str, tuple[Scene, tuple[str, ...]]] = {
    "quick-start-demo": (
        _the_quick_start_demo,
        ("python3 -m venv .venv && .venv/bin/pip install -q -e . &&",),
    ),
    "serve-and-route": (
        _serve_and_route_with_the_client,
        (".venv/bin/routelead buyers-sim &", "cat > lead.json"),
    ),
    "serve-off-loopback": (_serve_off_loopback_with_tls_and_tokens, ("routelead serve --config flows.yaml",)),
    "client-admin": (_the_client_admin_commands, ("export ROUTELEAD_TARGET=127.0.0.1:50051",)),
    "admin": (_the_admin_commands, ("export ROUTELEAD_ADMIN_TOKEN=… ROUTELEAD_ADMIN_TARGET",)),
    "books": (_the_books_commands, ("routelead migrate",)),
    "replay": (_the_replay, ("routelead replay --config candidate.yaml",)),
}


def test_every_sh_block_is_run_or_skipped_with_a_reason() -> None:
    covered = dict.fromkeys(SKIPPED, "skipped") | {
        prefix: name for name, (_, prefixes) in SCENES.items() for prefix in prefixes
    }
    problems = []
    for b in sh_blocks():
        owners = [p for p in covered if b.head.startswith(p)]
        if len(owners) != 1:
            problems.append(
                f"README line {b.line} ({b.head[:60]!r}): "
                + (f"matched by {owners}" if owners else "run by no scene here, and not in SKIPPED")
            )
    for prefix in covered:
        if not any(b.head.startswith(prefix) for b in sh_blocks()):
            problems.append(f"{prefix!r} matches no README block: remove it")
    assert all(reason.strip() for reason in SKIPPED.values())
    assert not problems, "\n".join(problems)
    # The one suite-level skip is still run verbatim by CI.
    [suite] = [p for p in SKIPPED if p.endswith(".venv/bin/pytest")]
    assert suite in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("name", list(SCENES))
def test_readme_commands_run_as_printed(name: str, tmp_path: Path) -> None:
    scene, _ = SCENES[name]
    scene(tmp_path)
    assert not (ROOT / "routelead.db").exists()
