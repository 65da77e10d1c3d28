"""aiosd's test suite; its folders mirror the package, shared helpers live in tests/support/."""
