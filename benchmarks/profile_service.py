"""`routelead serve` under pyinstrument: `python -m benchmarks.profile_service OUT -- SERVE-ARGS...`.

Used by `python -m benchmarks.run --profile`; runs the very command the benchmark measures (books
included) in this process and writes a text call tree (and OUT.html) when SIGTERM ends it.
py-spy is the lighter choice where ptrace is allowed; in containers without it this works everywhere.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pyinstrument import Profiler
from routelead.cli import main as routelead_main


def main(argv: list[str]) -> int:
    out, sep, *serve_args = argv
    if sep != "--" or ("--workers" in serve_args and serve_args[serve_args.index("--workers") + 1] != "1"):
        print("usage: profile_service OUT -- serve ... (one worker)", file=sys.stderr)
        return 2
    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    try:
        return routelead_main(serve_args)
    finally:
        profiler.stop()
        Path(out).write_text(
            profiler.output_text(unicode=True, show_all=False, timeline=False)
            + "\n\nFlat (self time):\n"
            + profiler.output_text(unicode=True, flat=True, show_all=True)
        )
        Path(out + ".html").write_text(profiler.output_html())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
