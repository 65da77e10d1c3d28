"""The command line (run, check, schema, status, sync-openclaw, service): thin layers over the daemon and the rest."""
