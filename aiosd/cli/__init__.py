"""The command line (run, check, schema, status, sync-openclaw): thin layers over the daemon, the config and the OpenClaw sync."""
