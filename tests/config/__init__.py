"""Tests of aiosd/config/."""
