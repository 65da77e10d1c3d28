"""Tests of aiosd/translate/."""
