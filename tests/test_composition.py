"""One composition root: the service's parts are built whole, and nothing is wired afterwards."""

from __future__ import annotations

import ast
from pathlib import Path

from routelead.api.server import Service
from routelead.records.ledger import Ledger

from tests.configs import buyer, compile_doc, document

API = Path(__file__).resolve().parent.parent / "service" / "routelead" / "api"


def _url(buyer_id: str, step: str) -> str:
    return f"http://127.0.0.1:9/{buyer_id}/{step}"  # never called: nothing is routed here


async def test_the_servicer_gets_a_router_whose_books_are_complete_before_it_starts(tmp_path: Path) -> None:
    ledger = await Ledger.open(f"sqlite:///{tmp_path / 'books.db'}")
    try:
        spool = tmp_path / "spool"
        service = Service(compile_doc(document([buyer(_url, "a")])), ledger=ledger, books_spool=spool)

        books = service.router.books  # built with the service, not at start
        assert books is not None
        assert books.spool == spool
        assert books.on_writable is not None  # readiness follows the books from the first lead
        assert books.on_booked == service.idempotency.remember
    finally:
        await ledger.close()


def test_the_composition_root_sets_nothing_on_a_built_part() -> None:
    """No `part.attribute = …` outside the part's own methods, and no choosing by which store
    was built (`isinstance`): the code that builds a part gives it everything at construction."""
    found: list[str] = []
    for name in ("app.py", "server.py"):
        tree = ast.parse((API / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    root = target
                    while isinstance(root, ast.Attribute):
                        root = root.value
                    if target is not root and not (isinstance(root, ast.Name) and root.id == "self"):
                        found.append(f"{name}:{node.lineno} sets {ast.unparse(target)}")
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "isinstance"
            ):
                found.append(f"{name}:{node.lineno} {ast.unparse(node)}")
    assert found == []
