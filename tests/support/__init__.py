"""Shared test helpers: the fake AIOS kernel (a real loopback server), daemon processes, config and fixture builders."""
