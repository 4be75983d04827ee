"""`python -m routelead.cli`: the `routelead` command without its console script."""

import sys

from routelead.cli import entry

sys.exit(entry())
