"""The `routelead` command: one module per group of verbs, each registering its own parsers.

serve: serve, check-config, migrate, sink, demo, buyers-sim · books: lead, report, return,
settle-sale, open-posts · state: unsettled, settle, balance, suppress · admin · stats · replay.
"""

from __future__ import annotations

import argparse
import os
import sys

from routelead.cli import admin, books, replay, serve, state, stats
from routelead.cli.common import fail
from routelead.settings import SettingsError, load_settings

GROUPS = (serve, books, admin, stats, replay, state)


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings()  # every variable, checked once, before anything starts
    except SettingsError as exc:
        fail(str(exc))
        return 2
    parser = argparse.ArgumentParser(
        prog="routelead", description="Real-time lead distribution by ping-post."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_parsers(sub, settings)
    args = parser.parse_args(argv)
    code: int = args.run(args, settings)  # each verb's parser names the function that runs it
    return code


def entry() -> int:
    """Console entry point: a closed pipe (`routelead demo | head`) ends quietly."""
    try:
        return main()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
