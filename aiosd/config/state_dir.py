"""Where aiosd keeps what must survive a restart (the kernel's last known model list)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def resolve_state_dir(configured: str | None, *, base: Path | None = None,
                      env: Mapping[str, str] = os.environ) -> Path:
    """``state_dir`` from the config (relative to ``base``, the config file's directory), else
    ``$STATE_DIRECTORY`` (systemd's ``StateDirectory=aiosd``: /var/lib/aiosd; the first of several),
    else ``$XDG_STATE_HOME/aiosd``, else ``~/.local/state/aiosd``."""
    if configured:
        path = Path(os.path.expanduser(configured))
        return path if path.is_absolute() else ((base or Path.cwd()) / path).absolute()
    systemd = env.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd and os.path.isabs(systemd):
        return Path(systemd)
    xdg = env.get("XDG_STATE_HOME", "")
    if xdg and os.path.isabs(xdg):  # the XDG spec: a relative value is invalid and ignored
        return Path(xdg) / "aiosd"
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".local" / "state" / "aiosd"
