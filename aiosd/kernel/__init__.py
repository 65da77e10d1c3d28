"""Talking to AIOS kernels: the HTTP client and its wires, kernel error mapping, the admission queue, retries, the canary and the model catalog. Knows nothing of OpenAI bodies or of OpenClaw."""
