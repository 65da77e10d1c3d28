"""The running service: its runtime state, one forwarded request, metrics, systemd notifications and logging. Ties kernel/, openclaw/ and translate/ together; the HTTP layer sits above it."""
