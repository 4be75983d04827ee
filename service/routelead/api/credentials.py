"""The Admin API's own credential: from the environment or a mounted file, never from the config."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def admin_token(env: Mapping[str, str] | None = None) -> str:
    """ROUTELEAD_ADMIN_TOKEN, or the file named by ROUTELEAD_ADMIN_TOKEN_FILE; '' when neither."""
    env = os.environ if env is None else env
    if path := env.get("ROUTELEAD_ADMIN_TOKEN_FILE"):
        return Path(path).read_text().strip()
    return env.get("ROUTELEAD_ADMIN_TOKEN", "").strip()
