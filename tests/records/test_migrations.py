"""Schema migrations when several processes start at once on one fresh SQLite file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from routelead.records.db import head_revision

MIGRATE = """
import asyncio, sys
from routelead.records.db import create_engine, migrate

async def main():
    engine = create_engine("sqlite:///" + sys.argv[1])
    print(await migrate(engine))
    await engine.dispose()

asyncio.run(main())
"""


def test_processes_starting_together_migrate_once_and_all_start(tmp_path: Path) -> None:
    db = tmp_path / "books.db"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE, str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=120) for p in procs]

    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err.decode()[-1500:]
        assert out.decode().strip() == head_revision()
