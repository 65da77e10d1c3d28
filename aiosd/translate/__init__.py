"""Between dialects: the chat request model, the reply, prompt-mode and native tool calling, building the kernel's /query body and decoding its answer. Pure functions: no I/O, no kernel client."""
