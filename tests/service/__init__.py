"""Tests of aiosd/service/."""
