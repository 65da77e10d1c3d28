"""The model mapping: which model ids aiosd exposes, what each maps to, and the list remembered on disk."""
