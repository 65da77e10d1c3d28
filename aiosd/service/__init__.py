"""The running service: the runtime and its parts, one forwarded request, metrics, systemd and logging.

Ties kernel/, models/, openclaw/ and translate/ together; the HTTP layer sits above it.
"""
