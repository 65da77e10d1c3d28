"""Tests of aiosd/kernel/."""
