"""Talking to AIOS kernels: client and wires, error mapping, the pool, health, scheduler, retries, canary."""
