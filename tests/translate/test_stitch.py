"""translate.stitch: telling that the kernel cut an answer, and joining the pieces without losing or doubling text."""

from __future__ import annotations

import msgspec
import pytest

from aiosd.translate import stitch, tool_prompt
from aiosd.translate.chat_request import parse_chat_request
from tests.support.long_answers import WRITE_TOOL, file_content, prose, write_call

CAP = 1000
CUT = CAP * 4  # characters of ASCII text at the cap


def _verdict(text: str) -> stitch.Verdict:
    reply = tool_prompt.parse_reply_text(text, None)
    block = stitch.open_block_at(text, 0, None) is not None
    return stitch.verdict(text, ends_in_invoke=reply.finish_reason == "length", block_open=block, cap_tokens=CAP)


def test_an_answer_ending_inside_an_invoke_is_certainly_cut_whatever_its_length():
    assert _verdict(write_call("a", file_content(10_000))[:CUT]) == "certain"
    assert _verdict('<function_calls>\n<invoke name="read">\n<parameter name="path">a.t') == "certain"


def test_a_long_answer_ending_mid_sentence_is_likely_cut_and_a_short_one_is_not():
    text = prose(6_000)
    assert _verdict(text[:3_000].rstrip(".")) == "likely"  # 60 % of the cap and up
    assert _verdict(text[:2_000].rstrip(".")) is None  # too short to have been cut
    assert _verdict("a short answer without a full stop") is None


def test_a_piece_at_the_cap_is_cut_even_when_it_ends_with_a_full_stop():
    text = prose(6_000)
    at_cap = text[: text.rfind(".", 0, CUT + 100) + 1]
    assert len(at_cap) >= CUT
    assert _verdict(at_cap) == "likely"
    shorter = text[: text.rfind(".", 0, 3_500) + 1]
    assert _verdict(shorter) is None


@pytest.mark.parametrize("end, natural", [
    ("It works.", True), ("Done!", True), ("Really?", True), ('He said "yes."', True), ("(see above.)", True),
    ("Thanks 🙂", True), ("```python\nprint(1)\n```", True), ("</function_calls>", True), ("完成。", True),
    ("and then the", False), ("Here is the list:", False), ("- run the tests", False), ("| a | b |", False),
    ("```python\nprint(1)", False), ("see [the docs](https://example.org)", False),
])
def test_natural_ends(end, natural):
    assert stitch.natural_end("Some text before.\n\n" + end + "\n") is natural


@pytest.mark.parametrize("reply", ["", "  \n", "nothing more", "Nothing more.", "(nothing more)",
                                   "There is nothing more to add."])
def test_an_empty_or_nothing_more_piece_ends_the_answer_unchanged(reply):
    assert stitch.join_piece("The answer so far", reply, None) == stitch.Joined("", True)


def test_a_piece_that_merely_mentions_nothing_more_is_text():
    assert stitch.join_piece("I have", " nothing more to say than this: it works.", None).ended is False


def test_an_exact_continuation_is_joined_as_it_is():
    text = prose(9_000)
    answer, piece = text[:CUT], text[CUT:]
    assert answer + stitch.join_piece(answer, piece, None).added == text


def test_repeated_last_words_restarted_lines_and_restarted_paragraphs_are_dropped():
    text = prose(9_000)
    answer, rest = text[:CUT], text[CUT:]
    for repeat_from in (answer.rfind(" ", 0, len(answer) - 5), answer.rfind("\n"), answer.rfind(". ") + 2,
                        len(answer) - 500):
        piece = answer[repeat_from:] + rest
        assert answer + stitch.join_piece(answer, piece, None).added == text, repeat_from


@pytest.mark.parametrize("answer, piece", [
    ("    }\n  }\n", "}\n"),  # code closers: nothing to drop
    ("total: 1, 1, 1", ", 1, 1\n"),  # a data row going on
    ("the cat sat on the m", "at"),  # a word finished
    ("it is 4", "2"),
])
def test_a_head_that_only_looks_like_a_repetition_is_kept(answer, piece):
    assert stitch.join_piece(answer, piece, None).added == piece


def _block_answer(content: str) -> tuple[str, int | None]:
    text = write_call("notes/a.txt", content)
    answer = text[:CUT]
    return answer, stitch.open_block_at(answer, 0, None)


def test_a_piece_that_reopens_the_block_and_the_parameter_goes_on_inside_it():
    content = file_content(9_000)
    answer, block = _block_answer(content)
    whole = write_call("notes/a.txt", content)
    rest = whole[CUT:]
    reopened = ('<function_calls>\n<invoke name="write">\n<parameter name="path">notes/a.txt</parameter>\n'
                '<parameter name="content">' + rest)
    joined = answer + stitch.join_piece(answer, reopened, block).added
    assert joined == whole
    [call] = tool_prompt.parse_reply_text(joined, parse_chat_request(msgspec.json.encode(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [WRITE_TOOL]})).tools).tool_calls
    assert msgspec.json.decode(call.arguments_json) == {"path": "notes/a.txt", "content": content}


def test_a_piece_that_restarts_the_whole_block_is_joined_after_the_cut():
    content = file_content(9_000)
    whole = write_call("notes/a.txt", content)
    answer, block = _block_answer(content)
    restart = whole[whole.index("<function_calls>"):]  # the block again from its start, and on past the cut
    assert answer + stitch.join_piece(answer, restart, block).added == whole


def test_a_piece_that_reopens_the_block_between_two_invokes_adds_the_next_invoke():
    answer = '<function_calls>\n<invoke name="read"><parameter name="path">a</parameter></invoke>\n'
    block = stitch.open_block_at(answer, 0, None)
    piece = '<function_calls>\n<invoke name="ls"/>\n</function_calls>'
    assert stitch.join_piece(answer, piece, block).added == '<invoke name="ls"/>\n</function_calls>'


def test_the_open_block_is_followed_piece_by_piece():
    answer = "text <function_calls>\n<invoke"
    block = stitch.open_block_at(answer, 0, None)
    assert block == 5
    answer2 = answer + ' name="ls"/>\n</function_calls>'
    assert stitch.open_block_at(answer2, len(answer), block) is None
    # A tag split across two pieces is seen.
    first = "text <function_ca"
    assert stitch.open_block_at(first + "lls>\n", len(first), None) == 5


def test_the_certain_prefix_holds_back_what_may_become_a_tool_call():
    assert stitch.certain_prefix("Let me write it.\n\n<function_calls>\n<inv", "prompt") == "Let me write it."
    assert stitch.certain_prefix("Let me write it.\n\n```xml\n<function_ca", "prompt") == "Let me write it."
    assert stitch.certain_prefix("Some text and <", "prompt") == "Some text and"
    assert stitch.certain_prefix("Some text and <b>bold</b> more", "prompt") == "Some text and <b>bold</b> more"
    assert stitch.certain_prefix("Plain text  \n", "none") == "Plain text  \n"
    assert stitch.certain_prefix("abcdef", "none", limit=3) == "abc"


def test_the_continuation_body_adds_the_answer_and_the_request_to_continue():
    body = {"agent_name": "a", "query_type": "llm",
            "query_data": {"messages": [{"role": "user", "content": "hi"}], "llms": [{"name": "m"}], "tools": []}}
    again = msgspec.json.decode(stitch.continuation_body(msgspec.json.encode(body), "the answer so f"))
    messages = again["query_data"].pop("messages")
    assert messages == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "the answer so f"},
                        {"role": "user", "content": stitch.CONTINUE_INSTRUCTION}]
    assert again["query_data"] == {"llms": [{"name": "m"}], "tools": []}


def test_trim_to_tokens_cuts_whole_characters():
    assert stitch.trim_to_tokens("abcdefghij", 2) == "abcdefgh"
    assert stitch.trim_to_tokens("ééééé", 2) == "éééé"  # 8 bytes: 4 two-byte letters
    assert stitch.trim_to_tokens("€€€", 1) == "€"  # 4 bytes hold one three-byte letter, not a half


def test_the_overlap_search_compares_a_bounded_number_of_places_on_periodic_text():
    # Every place of the piece matches the tail window: at most MAX_PROBES of them are compared.
    answer = "ab" * 50_000
    piece = "ab" * 20_000 + "c"
    found = stitch.overlap(answer, piece)
    assert found % 2 == 0 and 0 < found <= stitch.PROBE_CHARS + 2 * stitch.MAX_PROBES
