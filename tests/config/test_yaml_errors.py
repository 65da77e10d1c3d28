"""YAML syntax errors in plain words, at the line of the mistake: the common slips in a hand-edited config."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aiosd.config.loader import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


def first_problem(tmp_path: Path, text: str):
    path = tmp_path / "aiosd.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    return caught.value.problems[0]


CASES = {
    # The issue's own example: PyYAML says "expected <block end>, but found '<block mapping start>'".
    "a key indented one space less than its neighbours": (
        "models:\n  discover: true\n  map:\n    sonnet: {kernel_model: x}\n   opus: {kernel_model: y}\n",
        (5, 4), "invalid YAML: the keys under 'map' (line 3) are not lined up: this line is indented by 3 spaces, "
                "'sonnet' (line 4) by 4 spaces; indent them alike"),
    "a key indented under a key that already has a value": (
        "kernel:\n  url: http://x\n  agent_name: a\n    timeout: 5s\n",
        (4, 5), "invalid YAML: this line is indented by 4 spaces, more than the key above it expects: 'agent_name' "
                "(line 3) already has a value, so nothing can be nested under it; line it up with a key above: "
                "2 spaces like 'agent_name' (line 3) or 0 spaces like 'kernel' (line 1)"),
    "a key that lines up with nothing": (
        "models:\n  map:\n    sonnet:\n      kernel_model: x\n      backend: y\n   discover: true\n",
        (6, 4), "invalid YAML: this line is indented by 3 spaces, which lines up with no key above it; line it up "
                "with one: 6 spaces like 'backend' (line 5), 4 spaces like 'sonnet' (line 3), 2 spaces like 'map' "
                "(line 2) or 0 spaces like 'models' (line 1)"),
    "a top-level key after an indented first line": (
        "  kernel:\n    url: http://x\nlisten: 127.0.0.1:8700\n",
        (3, 1), "invalid YAML: this line is indented by 0 spaces, less than the first key of the file ('kernel', "
                "line 1, at 2 spaces); the keys of the top level must all start at the same column, best the first"),
    "list items not lined up": (
        "retry:\n  on_status:\n    - 429\n   - 503\n",
        (4, 4), "invalid YAML: the list items under 'on_status' (line 2) are not lined up: this line is indented by "
                "3 spaces, the list item on line 3 by 4 spaces; indent them alike"),
    "a list item among keys": (
        "kernel:\n  url: http://x\n  - 429\n",
        (3, 3), "invalid YAML: a list item ('- ') among keys (next to 'url'); a list must be the value of its own "
                "key, indented under it"),
    "a tab that indents": (
        "kernel:\n\turl: http://x\n",
        (2, 1), "invalid YAML: a tab character indents this line; YAML allows only spaces here: replace the tab "
                "with spaces"),
    "a tab after a colon": (
        "kernel:\n  url:\thttp://x\n",
        (2, 7), "invalid YAML: a tab character is in this line; YAML allows only spaces here: replace the tab with "
                "spaces"),
    "an unclosed double quote": (
        'kernel:\n  agent_name: "openclaw\nlogging:\n  level: info\n',
        (2, 15), 'invalid YAML: the quote " opened here is never closed; end the value with "'),
    # The case: the next quote, lines later, closes the value, and YAML trips on what follows it.
    "an unclosed double quote with quoted values further down": (
        'kernel:\n  url: "http://localhost:8000\n  timeout: 10s\nmodels:\n  map:\n'
        '    sonnet: {kernel_model: "gpt-4o-mini"}\n',
        (2, 8), 'invalid YAML: the quote " opened here is not closed on its line, so YAML reads on to the next " '
                '(line 6) as its end; end the value with " on this line'),
    "an unclosed single quote with a block of keys after it": (
        "kernel:\n  agent_name: 'openclaw\n  url: http://x\nmodels:\n  map:\n    sonnet:\n"
        "      kernel_model: 'gpt-4o-mini'\n",
        (2, 15), "invalid YAML: the quote ' opened here is not closed on its line, so YAML reads on to the next ' "
                 "(line 7) as its end; end the value with ' on this line"),
    "an unclosed single quote": (
        "kernel:\n  agent_name: 'openclaw\n",
        (2, 15), "invalid YAML: the quote ' opened here is never closed; end the value with '"),
    "an unclosed bracket": (
        "retry:\n  on_status: [429, 503\n  max_retries: 3\n",
        (2, 14), "invalid YAML: the '[' opened here is never closed: YAML reached ':' at line 3 before a ']'; close "
                 "it with ']' (and separate the entries with ', ')"),
    "an unclosed brace at the end of the file": (
        "retry: {max_retries: 3\n",
        (1, 8), "invalid YAML: the '{' opened here is never closed: YAML reached the end of the file before a '}'; "
                "close it with '}' (and separate the entries with ', ')"),
    "a closing bracket too many": (
        "retry:\n  on_status: [429]]\n",
        (2, 19), "invalid YAML: a ']' with no '[' before it; remove it"),
    "no space after a colon, before another key": (
        "listen:127.0.0.1:8700\nkernel:\n  timeout: 5s\n",
        (1, 7), "invalid YAML: no space after the colon of 'listen', so YAML reads the line as text, not as a key: "
                "write 'listen: ' and then the value"),
    "no space after a colon inside a section": (
        'kernel:\n  url: "http://x"\n  timeout:5s\n  agent_name: a\n',
        (3, 10), "invalid YAML: no space after the colon of 'timeout', so YAML reads the line as text, not as a "
                 "key: write 'timeout: ' and then the value"),
    "no space after a colon: a section read as text": (
        "logging:\n  level:debug\n",
        (2, 3), "logging: must be a mapping (indented key: value lines), got text: no space after the colon of "
                "'level', so YAML read it as text, not as a key: write 'level: ' and then the value"),
    "no space after a top-level colon: one long key": (
        "kernel:\n  timeout: 5s\nlogging:{level: info}\n",
        (3, 1), "logging: unknown key 'logging:...': no space after the colon of 'logging', so YAML read it as "
                "text, not as a key: write 'logging: ' and then the value"),
    "a colon inside an unquoted value": (
        "kernel:\n  agent_name: team: a\n",
        (2, 19), "invalid YAML: a second ': ' in the value of 'agent_name', which YAML takes for another key; put "
                 "the value in quotes (agent_name: \"...\")"),
    "a key without a colon": (
        "kernel:\n  url\n  timeout: 5s\n",
        (2, 3), "invalid YAML: this line has no ':' (or no space after it): a key needs 'key: value', and a value "
                "belongs on the line of its key or indented under it"),
    "a value starting with @": (
        "kernel: {agent_name: @me}\n",
        (1, 22), "invalid YAML: a value cannot start with '@' in YAML; put the value in quotes"),
    "a backslash escape in double quotes": (
        'openclaw:\n  config_path: "C:\\openclaw.json"\n',
        (2, 20), "invalid YAML: '\\o' is not an escape YAML knows, and a backslash in double quotes starts one; use "
                 "single quotes for text with backslashes, or write \\\\"),
    "text after a closing quote": (
        'kernel:\n  agent_name: "a"b\n',
        (2, 18), "invalid YAML: text after the closing quote of a quoted value; put the whole value in the quotes"),
    "a second document": (
        "kernel: {}\n---\nretry: {}\n",
        (2, 1), "invalid YAML: a second YAML document starts here ('---'); aiosd reads one: remove this line or merge "
                "the documents"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_common_yaml_mistake_is_said_in_plain_words_at_its_line(tmp_path, name):
    text, (line, column), message = CASES[name]
    problem = first_problem(tmp_path, text)
    assert str(problem) == f"{tmp_path / 'aiosd.yaml'}:{line}:{column}: {message}"


def _mistakes(line: str):
    if line.startswith(" "):
        yield "one space less", line[1:]
        yield "a tab for a space", "\t" + line[1:]
    yield "one space more", " " + line
    if ": " in line:
        yield "no space after the colon", line.replace(": ", ":", 1)


def test_every_slip_in_the_example_config_is_located_and_in_plain_words(tmp_path):
    """Each line of the shipped example, broken the usual ways: the error names that line, in no parser jargon."""
    lines = (REPO / "config" / "aiosd.yaml").read_text().split("\n")
    path = tmp_path / "aiosd.yaml"
    checked, wrong = 0, []
    for index, original in enumerate(lines):
        if not original.strip() or original.lstrip().startswith("#"):
            continue
        number = index + 1
        for mistake, broken in _mistakes(original):
            path.write_text("\n".join([*lines[:index], broken, *lines[index + 1:]]))
            try:
                load_config(path, env={})
                continue  # some slips are still valid YAML and a valid config (a trailing comment moved)
            except ConfigError as exc:
                problem = exc.problems[0]
            checked += 1
            names_the_line = problem.line == number or re.search(rf"\bline {number}\b", problem.message)
            jargon = re.search(r"<block|<scalar>|expected|found character|while (scanning|parsing)", problem.message)
            if not names_the_line or jargon:
                wrong.append(f"{mistake} on line {number}: {problem}")
    assert checked > 50
    assert wrong == []
