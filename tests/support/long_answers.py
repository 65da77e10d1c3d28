"""Long model answers for the continuation tests and bench: prose, a file's content, a prompt-mode write call."""

from __future__ import annotations

import random

WRITE_TOOL = {"type": "function", "function": {
    "name": "write", "description": "Write a file.",
    "parameters": {"type": "object", "required": ["path", "content"],
                   "properties": {"path": {"type": "string"}, "content": {"type": "string"}}}}}

_WORDS = ["kernel", "answer", "token", "stream", "piece", "model", "agent", "file", "line", "queue", "slot",
          "request", "client", "prose", "river", "mountain", "garden", "window", "letter", "morning", "evening",
          "harbour", "lantern", "meadow", "engine", "signal", "thread"]


def prose(size: int, seed: int = 1) -> str:
    """About ``size`` characters of sentences in paragraphs, never repeating a sentence, ending with a period."""
    rng = random.Random(seed)
    parts: list[str] = []
    length, n = 0, 0
    while length < size:
        n += 1
        words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 16))]
        sentence = f"Sentence {n} says the {' '.join(words)}."
        separator = "\n\n" if n % 7 == 0 else " "
        parts.append(sentence + separator)
        length += len(sentence) + len(separator)
    return "".join(parts).rstrip()


def file_content(size: int) -> str:
    """About ``size`` characters of a source-like file: numbered lines with <, &, quotes, tabs and non-ASCII."""
    lines = []
    length, n = 0, 0
    while length < size:
        n += 1
        line = f'\tline {n:04d}: if a < {n} && b > "{n % 7}" then \'ok\' & café № {n * 31 % 97}'
        lines.append(line)
        length += len(line) + 1
    return "\n".join(lines) + "\n"


def write_call(path: str, content: str, preface: str = "I'll write the file now.\n\n") -> str:
    """A model's prompt-mode answer calling ``write`` (the format tool_prompt tells models to use)."""
    return (f'{preface}<function_calls>\n<invoke name="write">\n<parameter name="path">{path}</parameter>\n'
            f'<parameter name="content">{content}</parameter>\n</invoke>\n</function_calls>')
