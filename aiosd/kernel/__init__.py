"""Talking to AIOS kernels: the HTTP client and its wires, kernel error mapping, the pool, its health and scheduler, retries and the canary. Knows nothing of OpenAI bodies or of OpenClaw."""
