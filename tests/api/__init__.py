"""Tests of aiosd/api/."""
