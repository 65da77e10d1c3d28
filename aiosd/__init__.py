"""aiosd: run OpenClaw agents on an AIOS kernel (package version lives here)."""

__version__ = "0.1.0"
