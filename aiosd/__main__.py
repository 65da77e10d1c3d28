"""Entry point for ``python -m aiosd``."""

from aiosd.cli.main import main

raise SystemExit(main())
