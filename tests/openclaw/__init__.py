"""Tests of aiosd/openclaw/."""
