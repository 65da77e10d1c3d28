"""Files shipped with aiosd (the config's JSON Schema, the example config): in the wheel or a source checkout."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# In the wheel these live under the package (pyproject's force-include); in a checkout, at the top.
SCHEMA = ("schemas/aiosd.schema.json", "schemas/aiosd.schema.json")
EXAMPLE_CONFIG = ("examples/aiosd.yaml", "config/aiosd.yaml")


def shipped_file(what: tuple[str, str]) -> Path:
    """The installed copy of a shipped file, else the source checkout's."""
    in_package, in_checkout = what
    packaged = resources.files("aiosd").joinpath(in_package)
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / in_checkout


def example_config_path() -> Path:
    """The example config (``config/aiosd.yaml`` in the repository), as installed."""
    return shipped_file(EXAMPLE_CONFIG)
