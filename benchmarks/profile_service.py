"""`routelead serve` under pyinstrument: `python -m benchmarks.profile_service CONFIG ADDRESS OUT`.

Used by `python -m benchmarks.run --profile`; writes a text call tree (and OUT.html) on SIGTERM.
py-spy is the lighter choice where ptrace is allowed; in containers without it this works everywhere.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pyinstrument import Profiler
from routelead.api.server import Service, serve_until_signalled
from routelead.config.loader import load_config
from routelead.telemetry.logs import configure_logging
from routelead.telemetry.tracing import configure_tracing


def main(argv: list[str]) -> int:
    config_path, address, out = argv
    config = load_config(config_path)
    configure_logging("INFO")
    configure_tracing()
    import uvloop

    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    try:
        uvloop.run(serve_until_signalled(Service(config, address=address)))
    finally:
        profiler.stop()
        Path(out).write_text(
            profiler.output_text(unicode=True, show_all=False, timeline=False)
            + "\n\nFlat (self time):\n"
            + profiler.output_text(unicode=True, flat=True, show_all=True)
        )
        Path(out + ".html").write_text(profiler.output_html())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
