"""Running the ``aiosd`` command line as a child process, the way a user's shell does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.daemon_process import REPO


def run_aiosd(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m aiosd ARGS`` with a clean environment (PATH, this checkout, HOME at ``cwd``); output captured."""
    child_env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "HOME": str(cwd or REPO)}
    child_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "aiosd", *args], capture_output=True, text=True,
                          env=child_env, cwd=cwd, timeout=60)
