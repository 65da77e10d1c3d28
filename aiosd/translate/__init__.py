"""Between dialects: the chat request, the reply, tool calling, the /query body and its answer. No I/O."""
