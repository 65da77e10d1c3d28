"""The type every subcommand module adds its parser to (what argparse's ``add_subparsers`` returns)."""

from __future__ import annotations

import argparse
from typing import Any, Protocol


class Subcommands(Protocol):
    """What ``add_subparsers`` returns, as far as the subcommands use it: a new parser per name."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...
