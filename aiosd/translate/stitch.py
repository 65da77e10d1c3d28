"""Answers cut by the kernel's token cap: telling that an answer was cut, the continuation's body, joining the pieces.

Pure text work; making the calls belongs to ``service.continuation``.

The kernel asks its LLM for at most ``kernel.answer_token_cap`` tokens and says nothing when it
cut (it returns no finish reason). Whether a piece was cut (``Verdict``):

- *certain*: the text ends inside a ``<function_calls>`` invoke (prompt-mode tools; the parser
  says ``finish_reason: "length"``);
- *likely*: the piece is estimated at the cap or more (tokens estimated at 4 UTF-8 bytes a token,
  as ``api.responses`` estimates usage), or at least ``LIKELY_SHARE`` of it and it does not end
  where text naturally ends (sentence punctuation, a closing code fence, a complete
  ``</function_calls>``, an emoji), or it ends inside a ``<function_calls>`` block.
  60 %: a cut piece is always the full cap, and the cap in UTF-8 bytes ranges from about 2.5
  bytes a token (dense code, CJK) to 4.5 (English prose), so a cut piece estimates at 62-112 %
  of the cap. A piece shorter than that was not cut: later pieces need it even inside a block.
  At the cap or over, even a natural end does not count: English prose is cut there, and a cut
  lands after a full stop about one time in fifteen. Measured on real text (bench/continuation.py,
  bench/RESULTS.md), the rule takes a fifth to two thirds of complete documentation of that length
  for cut (their last paragraph often ends in a link, a list item or a code line), and misses
  0-6 % of the cuts; a complete answer taken for cut costs one kernel call that answers "nothing more".

Joining (``join_piece``): the model was told to go on with the very next character, but may
repeat the last words, restart the line or the block, or reopen ``<function_calls>``. The overlap
(a suffix of the answer so far that the piece starts with, possibly after the reopened tags) is
found by comparing a bounded window of the answer's tail with the piece's head, and dropped from
the piece; the answer so far is never changed. Work per piece is bounded by the piece's length
(at most ``MAX_PROBES`` places are compared), so a whole answer is joined in time linear in its
length. A piece that is empty or only says "nothing more" ends the answer unchanged.

Ambiguity that no rule removes: when the answer's last characters are repeated text (a data
file of identical rows) and the piece goes on with the same text, the piece's head looks like a
repetition. Short overlaps therefore count only when they start at a word boundary and hold at
least three letters or digits.
"""

from __future__ import annotations

import collections
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import msgspec

from aiosd.translate import tool_prompt

Verdict = Literal["certain", "likely"] | None

BYTES_PER_TOKEN = 4  # the same estimate as api.responses' usage (translate cannot import api)
LIKELY_SHARE = 0.6  # a piece this share of the cap or longer may have been cut (see module docstring)
PROBE_CHARS = 32  # the tail window compared with the next piece's head
MAX_PROBES = 64  # places in a piece where the tail window is checked as the end of an overlap
MAX_OVERLAP_SEARCH = 32_768  # characters of a piece's head searched for the repeated tail
NATURAL_END_WINDOW = 256  # characters of an answer's end read to tell whether it ends naturally
MIN_SHORT_OVERLAP_ALNUM = 3  # an overlap shorter than the window needs this many letters or digits

CONTINUE_INSTRUCTION = (
    "Your previous answer was cut off by a length limit. Continue it exactly where it stopped: "
    "write only the rest, starting with the very next character, as if nothing had interrupted you. "
    "Do not repeat anything, do not add a preamble or a comment, and if you were inside a "
    "<function_calls> block, go on inside it without opening a new one. "
    "If your answer was already complete, reply with only: nothing more"
)

_NOTHING_MORE = re.compile(
    r"\W*(?:there\s+is\s+)?nothing\s+more(?:\s+to\s+(?:add|write|say|continue))?\W*", re.IGNORECASE)
_SENTENCE_END = frozenset(".!?。！？…")
_CLOSERS = frozenset("\"'”’»)]}*_`")
_BOUNDARY_BEFORE = frozenset(" \t\r\n>([{\"'`")
_FENCE_LINE = re.compile(r"(?:^|\n)[ \t]*```[^\n`]*$")  # a last line opening (or closing) a code fence
_CLOSING_FENCE = re.compile(r"(?:^|\n)[ \t]*```[ \t]*$")  # a bare fence: most often the closing one
_TAG_PREFIX_MAX = len(tool_prompt.BLOCK_OPEN) - 1


def utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def estimated_tokens(text: str) -> int:
    return -(-utf8_len(text) // BYTES_PER_TOKEN)


def near_cap(piece: str, cap_tokens: int) -> bool:
    """Whether ``piece`` is long enough to have been cut by a cap of ``cap_tokens``."""
    threshold = LIKELY_SHARE * cap_tokens * BYTES_PER_TOKEN
    # Cheap first: a piece is at most 4 UTF-8 bytes a character.
    return len(piece) * 4 >= threshold and utf8_len(piece) >= threshold


def verdict(piece: str, *, ends_in_invoke: bool, block_open: bool, cap_tokens: int) -> Verdict:
    """Whether the kernel cut the first piece of an answer (see the module docstring)."""
    if ends_in_invoke:
        return "certain"
    return "likely" if likely_cut(piece, piece, block_open=block_open, cap_tokens=cap_tokens) else None


def likely_cut(piece: str, answer: str, *, block_open: bool, cap_tokens: int) -> bool:
    """Whether ``piece`` (the answer so far ending with it: ``answer``) looks cut by the cap."""
    if not near_cap(piece, cap_tokens):
        return False
    return block_open or utf8_len(piece) >= cap_tokens * BYTES_PER_TOKEN or not natural_end(answer)


def natural_end(text: str) -> bool:
    """Whether text stops where written text naturally stops (and not, say, mid-sentence).

    Reads only the last ``NATURAL_END_WINDOW`` characters."""
    end = text[-NATURAL_END_WINDOW:].rstrip()
    if not end:
        return not text.strip()
    if end.endswith(tool_prompt.BLOCK_CLOSE) or _CLOSING_FENCE.search(end):
        return True
    trimmed = end.rstrip("".join(_CLOSERS))
    if len(end) - len(trimmed) > 3 or not trimmed:
        return False
    last = trimmed[-1]
    return last in _SENTENCE_END or unicodedata.category(last) == "So"


def is_nothing_more(piece: str) -> bool:
    """An empty continuation, or one that only says the answer was complete."""
    stripped = piece.strip()
    return not stripped or (len(stripped) <= 80 and _NOTHING_MORE.fullmatch(stripped) is not None)


def continuation_body(content: bytes, answer: str) -> bytes:
    """The /query body ``content`` with the answer so far as the assistant's turn and the
    instruction to continue as a user turn after it."""
    body = msgspec.json.decode(content)
    messages = body["query_data"]["messages"]
    messages.append({"role": "assistant", "content": answer})
    messages.append({"role": "user", "content": CONTINUE_INSTRUCTION})
    return msgspec.json.encode(body)


# --- the open <function_calls> block ------------------------------------------------------------


def open_block_at(text: str, start: int, previous: int | None) -> int | None:
    """Where the ``<function_calls>`` block open at the end of ``text`` starts, or None.

    Only ``text[start - len(tag):]`` is read: ``previous`` is the answer before ``start``."""
    scan_from = max(0, start - _TAG_PREFIX_MAX)
    opened = text.rfind(tool_prompt.BLOCK_OPEN, scan_from)
    closed = text.rfind(tool_prompt.BLOCK_CLOSE, scan_from)
    if opened == -1 and closed == -1:
        return previous
    return opened if opened > closed else None


@dataclass(frozen=True, slots=True)
class _OpenTags:
    invoke: str | None  # the invoke still open at the end of the block, by name
    parameter: str | None  # the parameter whose value the block ends in


def _open_tags(block: str) -> _OpenTags:
    """The invoke and parameter open at the end of a block (``block`` starts at its opening tag)."""
    last_invoke = _last(tool_prompt.INVOKE_OPEN.finditer(block))
    if last_invoke is None or last_invoke[3] or block.find(tool_prompt.INVOKE_CLOSE, last_invoke.end()) != -1:
        return _OpenTags(None, None)  # between invokes (or none yet)
    invoke = last_invoke[1] if last_invoke[1] is not None else last_invoke[2]
    last_param = _last(tool_prompt.PARAM_OPEN.finditer(block, last_invoke.end()))
    if last_param is None or block.find(tool_prompt.PARAM_CLOSE, last_param.end()) != -1:
        return _OpenTags(invoke, None)
    return _OpenTags(invoke, last_param[1] if last_param[1] is not None else last_param[2])


def _last(matches: Iterator[re.Match[str]]) -> re.Match[str] | None:
    found = collections.deque(matches, maxlen=1)
    return found[0] if found else None


_SPACE = re.compile(r"\s*")


def _skip_reopened(piece: str, block: str) -> int:
    """How much of ``piece``'s head reopens what is open at the end of ``block``: the
    ``<function_calls>`` tag, the open invoke's tag and the open parameter's tag, if repeated."""
    pos = _SPACE.match(piece).end()  # type: ignore[union-attr]  # \s* always matches
    if not piece.startswith(tool_prompt.BLOCK_OPEN, pos):
        return 0
    pos = _SPACE.match(piece, pos + len(tool_prompt.BLOCK_OPEN)).end()  # type: ignore[union-attr]  # as above
    tags = _open_tags(block)
    invoke = tool_prompt.INVOKE_OPEN.match(piece, pos)
    if tags.invoke is None or invoke is None or invoke[3] or (invoke[1] or invoke[2]) != tags.invoke:
        return pos
    pos = _SPACE.match(piece, invoke.end()).end()  # type: ignore[union-attr]  # as above
    while (param := tool_prompt.PARAM_OPEN.match(piece, pos)) is not None:
        name = param[1] if param[1] is not None else param[2]
        if name == tags.parameter:
            return param.end()  # the value goes on right after the tag: keep its whitespace
        close = piece.find(tool_prompt.PARAM_CLOSE, param.end())
        if close == -1:
            return pos
        pos = _SPACE.match(piece, close + len(tool_prompt.PARAM_CLOSE)).end()  # type: ignore[union-attr]  # as above
    return pos


# --- joining ------------------------------------------------------------------------------------


def overlap(answer: str, piece: str) -> int:
    """The length of the longest suffix of ``answer`` that ``piece`` starts with and that is a
    plausible repetition (see the module docstring); 0 for none."""
    if not answer or not piece:
        return 0
    head = piece[:MAX_OVERLAP_SEARCH]
    probe = answer[-PROBE_CHARS:]
    best = 0
    # Long overlaps: every place the tail window occurs in the head may end one.
    found, at = 0, head.find(probe)
    while at != -1 and found < MAX_PROBES:
        end = at + len(probe)
        if end > best and end <= len(answer) and answer.endswith(head[:end]):
            best = end
        found += 1
        at = head.find(probe, at + 1)
    if best >= len(probe):
        return best
    # Short overlaps: shorter than the window, checked one length at a time (bounded by the window).
    for size in range(min(len(probe) - 1, len(head), len(answer)), 0, -1):
        if answer.endswith(head[:size]) and _plausible_short(answer, size):
            return size
    return 0


def _plausible_short(answer: str, size: int) -> bool:
    repeated = answer[-size:]
    if sum(ch.isalnum() for ch in repeated) < MIN_SHORT_OVERLAP_ALNUM:
        return False
    before = answer[-size - 1] if size < len(answer) else "\n"
    return before in _BOUNDARY_BEFORE or not repeated[0].isalnum()


@dataclass(frozen=True, slots=True)
class Joined:
    added: str  # what the piece adds to the answer
    ended: bool  # the piece said the answer was complete ("nothing more", empty)


def join_piece(answer: str, piece: str, block_start: int | None) -> Joined:
    """What ``piece`` adds to ``answer`` (``block_start``: where the block open at its end starts)."""
    if is_nothing_more(piece):
        return Joined("", True)
    skip = overlap(answer, piece)
    if skip == 0 and block_start is not None:
        reopened = _skip_reopened(piece, answer[block_start:])
        if reopened:
            rest = piece[reopened:]
            return Joined(rest[overlap(answer, rest):], False)
    return Joined(piece[skip:], False)


# --- what may be streamed -----------------------------------------------------------------------


def certain_prefix(answer: str, tool_mode: str, limit: int | None = None) -> str:
    """The part of ``answer`` that is final text whatever comes next (what a stream may send).

    Prompt mode holds back the first ``<function_calls>`` (or the start of one at the end), the
    whitespace and code fence the parser strips before a block; ``limit`` caps it in characters."""
    text = answer if limit is None or len(answer) <= limit else answer[:limit]
    if tool_mode != "prompt":
        return text
    block = text.find(tool_prompt.BLOCK_OPEN)
    if block == -1:
        tail = text.rfind("<", max(0, len(text) - _TAG_PREFIX_MAX))
        if tail != -1 and tool_prompt.BLOCK_OPEN.startswith(text[tail:]):
            block = tail
    if block != -1:
        text = text[:block]
    text = text.rstrip()
    fence = _FENCE_LINE.search(text, max(0, text.rfind("\n") - 1))
    if fence is not None:
        text = text[: fence.start()].rstrip()
    return text


def trim_to_tokens(text: str, tokens: int) -> str:
    """``text`` cut to at most ``tokens`` estimated tokens (whole characters)."""
    size = tokens * BYTES_PER_TOKEN
    if text.isascii():
        return text[:size]
    return text.encode("utf-8", "surrogatepass")[:size].decode("utf-8", "ignore")


def pieces_summary(sizes: Sequence[int]) -> str:
    """``4000+4000+1850`` for a log line."""
    return "+".join(str(size) for size in sizes)
