"""The HTTP server's plumbing under the routes: listening sockets, connection limits, uvicorn's settings."""
