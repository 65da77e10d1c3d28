"""Entry point for ``python -m aiosd``."""

from aiosd.cli import main

raise SystemExit(main())
