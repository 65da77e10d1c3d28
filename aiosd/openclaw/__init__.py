"""OpenClaw's config file: reading and writing it safely, merging aiosd's provider into it, syncing it (no HTTP)."""
