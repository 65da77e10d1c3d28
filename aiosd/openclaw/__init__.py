"""OpenClaw's config file: reading and writing it safely, merging aiosd's provider into it, and the sync that keeps it in step. Nothing here serves HTTP."""
