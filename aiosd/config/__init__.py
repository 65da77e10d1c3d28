"""The config: its typed model, the YAML loader with positions, durations, the JSON Schema, the file watch.

Nothing here talks to a kernel or serves HTTP.
"""
