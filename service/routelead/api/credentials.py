"""The Admin API's own credential: from the environment or a mounted file, never from the config."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from routelead.settings import Settings


def admin_token(settings: Settings) -> str:
    """ROUTELEAD_ADMIN_TOKEN, or the file named by ROUTELEAD_ADMIN_TOKEN_FILE; '' when neither."""
    if path := settings.admin_token_file:
        return Path(path).read_text().strip()
    return settings.admin_token.strip()
