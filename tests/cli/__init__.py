"""Tests of aiosd/cli/."""
