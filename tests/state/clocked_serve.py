"""The real service on a clock the test sets (a file holding epoch seconds), so a test can move
several processes across a cap period boundary together. Usage: CONFIG LISTEN CLOCK_FILE."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from routelead.api.server import Service, serve_until_signalled
from routelead.config.loader import load_config
from routelead.settings import load_settings
from routelead.state.select import hot_state
from routelead.telemetry.logs import configure_logging


def main() -> None:
    config_path, listen, clock_file = sys.argv[1:4]
    configure_logging("WARNING")
    clock_path = Path(clock_file)

    def clock() -> float:
        return float(clock_path.read_text())

    async def run() -> None:
        state = hot_state(load_settings())
        service = Service(
            load_config(config_path),
            address=listen,
            caps=state.caps,
            dedupe=state.dedupe,
            idempotency=state.idempotency,
            rotation=state.rotation,
            clock=clock,
        )
        try:
            await serve_until_signalled(service)
        finally:
            await state.close()

    asyncio.run(run())


if __name__ == "__main__":
    main()
