"""PyYAML's syntax errors in plain words, placed at the line where the mistake was made.

PyYAML reports the token where parsing failed ("expected <block end>, but found '<block mapping
start>'"), often a line after the mistake. This module looks at the file's lines around that
place to name the usual mistakes: a line indented differently from its neighbours, a tab, a
quote or bracket never closed, a missing space after a colon, a colon inside an unquoted value.
Values are never quoted back (a value may be a secret), only keys and positions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeAlias

import yaml

# PyYAML's own line breaks (splitlines() knows a few more, which the reader refuses anyway).
_LINE_BREAK = re.compile(r"\r\n|[\r\n\x85\u2028\u2029]")
# "key:value": a key YAML reads as plain text because no space follows its colon.
_NO_SPACE_AFTER_COLON = re.compile(r"^\s*(?:-\s+)?([A-Za-z_][A-Za-z0-9_.-]*):(?=[^\s:/])")
_KEY = re.compile(r"^\s*(?:-\s+)?([^\s:#][^:#]*?)\s*:(?:\s|$)")
_SNIPPET = 40
# The line's text is not repeated: it may be a value, and a value may be a secret.
_NO_COLON = ("this line has no ':' (or no space after it): a key needs 'key: value', and a value belongs on "
             "the line of its key or indented under it")


@dataclass(frozen=True, slots=True)
class YamlSyntaxProblem:
    line: int | None  # 1-based
    column: int | None  # 1-based
    message: str


def describe_yaml_error(exc: yaml.MarkedYAMLError, text: str) -> YamlSyntaxProblem:
    """The error as a sentence a user can act on, at the line (and column) of the mistake."""
    lines = _LINE_BREAK.split(text)
    problem = exc.problem or ""
    context = exc.context or ""
    at = _mark(exc.problem_mark)
    opened = _mark(exc.context_mark)
    for describe in _DESCRIBERS:
        found = describe(lines, problem, context, at, opened)
        if found is not None:
            return found
    # Anything else: PyYAML's own words, still placed.
    words = problem + (f" ({context})" if context else "")
    return _placed(at, words or str(exc).splitlines()[0])


Place = tuple[int, int]  # line and column, 1-based
Found: TypeAlias = YamlSyntaxProblem | None


def _mark(mark: yaml.Mark | None) -> Place | None:
    return None if mark is None else (mark.line + 1, mark.column + 1)


def _placed(at: Place | None, message: str) -> YamlSyntaxProblem:
    return YamlSyntaxProblem(at[0], at[1], message) if at else YamlSyntaxProblem(None, None, message)


# --- reading the lines -------------------------------------------------------------------------


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _key_of(line: str) -> str | None:
    match = _KEY.match(line)
    return _short(match.group(1).strip("'\"")) if match else None


def _short(text: str) -> str:
    return text if len(text) <= _SNIPPET else text[: _SNIPPET - 3] + "..."


def _has_value(line: str) -> bool:
    """True for "key: value" (a value on the line), False for "key:" opening a section."""
    match = _KEY.match(line)
    if not match:
        return True  # a bare scalar or a list item's value
    rest = line[match.end():].split(" #", 1)[0].strip()
    return bool(rest) and not rest.startswith("#")


def _previous_content(lines: list[str], line: int) -> int | None:
    """The 1-based number of the nearest non-blank, non-comment line above ``line``."""
    for number in range(min(line - 1, len(lines)), 0, -1):
        if _is_content(lines[number - 1]):
            return number
    return None


def _keys_above(lines: list[str], line: int) -> list[tuple[int, str, int]]:
    """(indent, key, line) of each key the line could line up with: the nearest line above, then each
    less indented line above that (the sections it is in), innermost first."""
    found: list[tuple[int, str, int]] = []
    limit = None
    number = _previous_content(lines, line)
    while number is not None:
        text = lines[number - 1]
        indent = _indent(text)
        if limit is None or indent < limit:
            key = _key_of(text)
            if key is not None or text.lstrip().startswith("-"):
                found.append((indent, key or text.strip()[:1], number))
            limit = indent
            if indent == 0:
                break
        number = _previous_content(lines, number)
    return found


def _spaces(count: int) -> str:
    return f"{count} space{'' if count == 1 else 's'}"


def _named(key: tuple[int, str, int]) -> str:
    _, name, number = key
    return f"the list item on line {number}" if name == "-" else f"'{name}' (line {number})"


def _choices(keys: list[tuple[int, str, int]]) -> str:
    parts = [f"{_spaces(k[0])} like {_named(k)}" for k in keys]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def _indentation(lines: list[str], line: int) -> YamlSyntaxProblem | None:
    """Why ``line`` is indented wrongly, from the lines above it; None if it looks right."""
    if not 1 <= line <= len(lines) or not _is_content(lines[line - 1]):
        return None
    indent = _indent(lines[line - 1])
    keys = _keys_above(lines, line)
    if not keys:
        return None
    column = indent + 1
    nearest_indent, nearest_key, nearest_line = keys[0]
    nearest_text = lines[nearest_line - 1]
    closed = _has_value(nearest_text) and not nearest_text.lstrip().startswith("-")  # nothing may nest under it
    if indent > nearest_indent and not closed:
        return None  # a legal child; the problem is elsewhere
    parent = keys[1] if len(keys) > 1 else None
    if parent is not None and parent[0] < indent != nearest_indent and (
        indent < nearest_indent or _previous_content(lines, nearest_line) == parent[2]
    ):
        # Inside a section but not lined up with its keys (often the section's first key is the one off).
        entries = "list items" if nearest_key == "-" else "keys"
        return YamlSyntaxProblem(line, column, (
            f"the {entries} under {_named(parent)} are not lined up: this line is indented by "
            f"{_spaces(indent)}, {_named(keys[0])} by {_spaces(nearest_indent)}; indent them alike"))
    if indent > nearest_indent:
        return YamlSyntaxProblem(line, column, (
            f"this line is indented by {_spaces(indent)}, more than the key above it expects: {_named(keys[0])} "
            f"already has a value, so nothing can be nested under it; line it up with a key "
            f"above: {_choices(keys)}"))
    if all(indent != k[0] for k in keys):
        top = keys[-1]
        if indent < top[0]:
            return YamlSyntaxProblem(line, column, (
                f"this line is indented by {_spaces(indent)}, less than the first key of the file ('{top[1]}', "
                f"line {top[2]}, at {_spaces(top[0])}); the keys of the top level must all start at the same "
                "column, best the first"))
        return YamlSyntaxProblem(line, column, (
            f"this line is indented by {_spaces(indent)}, which lines up with no key above it; "
            f"line it up with one: {_choices(keys)}"))
    return None


def _missing_space(lines: list[str], line: int) -> YamlSyntaxProblem | None:
    if not 1 <= line <= len(lines):
        return None
    match = _NO_SPACE_AFTER_COLON.match(lines[line - 1])
    if match is None or _KEY.match(lines[line - 1]):
        return None
    key = _short(match.group(1))
    return YamlSyntaxProblem(line, match.end(1) + 1, (
        f"no space after the colon of '{key}', so YAML reads the line as text, not as a key: "
        f"write '{key}: ' and then the value"))


# --- one function per kind of mistake ----------------------------------------------------------


def _tab(lines: list[str], problem: str, context: str, at: Place | None, opened: Place | None) -> Found:
    if "'\\t'" not in problem or at is None:
        return None
    line, column = at
    text = lines[line - 1] if line <= len(lines) else ""
    leading = not text[: column - 1].strip()
    where = "indents this line" if leading else "is in this line"
    return YamlSyntaxProblem(line, column, f"a tab character {where}; YAML allows only spaces here: "
                                           "replace the tab with spaces")


def _bad_start(lines: list[str], problem: str, context: str, at: Place | None, opened: Place | None) -> Found:
    match = re.fullmatch(r"found character '(.)' that cannot start any token", problem)
    if match is None or at is None:
        return None
    return _placed(at, f"a value cannot start with '{match.group(1)}' in YAML; put the value in "
                                  "quotes")


def _unclosed_quote(lines: list[str], problem: str, context: str, at: Place | None, opened: Place | None) -> Found:
    if "quoted scalar" not in context or opened is None:
        return None
    quote = lines[opened[0] - 1][opened[1] - 1 : opened[1]] if opened[0] <= len(lines) else '"'
    if "unexpected end of stream" in problem or "unexpected document" in problem:
        return _placed(opened, f"the quote {quote} opened here is never closed; end the value with {quote}")
    escape = re.fullmatch(r"found unknown escape character '?(.*?)'?", problem)
    if escape and at is not None:
        return _placed(at, (
            f"'\\{escape.group(1)}' is not an escape YAML knows, and a backslash in double quotes starts one; "
            "use single quotes for text with backslashes, or write \\\\"))
    return None


def _unclosed_bracket(lines: list[str], problem: str, context: str, at: Place | None, opened: Place | None) -> Found:
    match = re.fullmatch(r"while parsing a flow (sequence|mapping)", context)
    if match is None or opened is None:
        return None
    open_, close = ("[", "]") if match.group(1) == "sequence" else ("{", "}")
    found = re.search(r"but got '(.*)'$", problem)
    seen = found.group(1) if found else "something else"
    after = "the end of the file" if seen == "<stream end>" else f"'{seen}' at line {at[0]}" if at else f"'{seen}'"
    return _placed(opened, (
        f"the '{open_}' opened here is never closed: YAML reached {after} before a '{close}'; "
        f"close it with '{close}' (and separate the entries with ', ')"))


def _stray_closer(lines: list[str], problem: str, context: str, at: Place | None, opened: Place | None) -> Found:
    match = re.fullmatch(r"expected <block end>, but found '([\]}])'", problem)
    if match is None or at is None:
        return None
    opener = "[" if match.group(1) == "]" else "{"
    return _placed(at, f"a '{match.group(1)}' with no '{opener}' before it; remove it")


def _quote_run_on(lines: list[str], problem: str, context: str, at: Place | None, opened: Place | None) -> Found:
    """A quote left open at the end of its line: YAML reads on, across lines, to the next quote of that kind,
    and trips over whatever follows it there. Blame the line where the quote opened, not where YAML tripped."""
    if at is None or not problem.startswith("expected"):
        return None
    start = _quoted_value_ending_on(lines, at)
    if start is None:
        return None
    (line, column), quote = start
    return _placed((line, column), f"the quote {quote} opened here is not closed on its line, so YAML reads on "
                                   f"to the next {quote} (line {at[0]}) as its end; end the value with {quote} on "
                                   "this line")


def _quoted_value_ending_on(lines: list[str], at: Place) -> tuple[Place, str] | None:
    """Where a quoted value that spans lines and ends on ``at``'s line (before its column) began, and its quote."""
    try:
        for token in yaml.scan("\n".join(lines[: at[0]])):
            end = token.end_mark
            if end.line + 1 > at[0]:
                return None
            if (isinstance(token, yaml.ScalarToken) and token.style in ('"', "'") and end.line + 1 == at[0]
                    and end.column + 1 <= at[1] and token.start_mark.line < end.line):
                return (token.start_mark.line + 1, token.start_mark.column + 1), token.style
    except yaml.YAMLError:
        return None
    return None


def _text_after_quote(lines: list[str], problem: str, context: str, at: Place | None, opened: Place | None) -> Found:
    if problem != "expected <block end>, but found '<scalar>'" or at is None:
        return None
    line = lines[at[0] - 1] if at[0] <= len(lines) else ""
    before = line[: at[1] - 1].rstrip()
    if before.endswith(("'", '"')):
        return _placed(at, "text after the closing quote of a quoted value; put the whole value in "
                                      "the quotes")
    return None


def _block_out_of_place(lines: list[str], problem: str, context: str, at: Place | None, opened: Place | None) -> Found:
    """Indentation: PyYAML's "expected <block end>, but found '<block mapping start>'" and kin."""
    if at is None:
        return None
    if re.fullmatch(r"expected (<block end>|'<document start>'), but found '<block (mapping|sequence) start>'",
                    problem) or problem == "expected <block end>, but found '-'":
        found = _indentation(lines, at[0]) or _glued(lines, problem, context, at, opened)
        if found is not None:
            return found
        if problem.endswith("'-'") or "sequence" in problem:
            key = next((k for _, k, _ in _keys_above(lines, at[0])), None)
            return _placed(at, (
                "a list item ('- ') among keys" + (f" (next to '{key}')" if key else "")
                + "; a list must be the value of its own key, indented under it"))
    return None


def _colon_out_of_place(lines: list[str], problem: str, context: str, at: Place | None, opened: Place | None) -> Found:
    """A ':' where none may be: inside an unquoted value, after a missing space, or on a line indented too far."""
    if "while scanning a simple key" in context and opened is not None:
        return _key_without_colon(lines, at, opened)
    if problem != "mapping values are not allowed here" or at is None:
        return None
    return _colon_in_value(lines, at)


def _key_without_colon(lines: list[str], at: Place | None, opened: Place) -> YamlSyntaxProblem:
    """PyYAML's "could not find expected ':'": the key started at ``opened``."""
    found = _missing_space(lines, opened[0])
    if found is not None:
        return found
    if at is not None and (found := _indentation(lines, at[0])) is not None:
        return found
    return _placed(opened, _NO_COLON)


def _colon_in_value(lines: list[str], at: Place) -> Found:
    """PyYAML's "mapping values are not allowed here" at ``at``."""
    line, column = at
    text = lines[line - 1] if line <= len(lines) else ""
    key_here = _KEY.match(text)
    if key_here is not None and key_here.end() <= column - 1:
        key = _short(key_here.group(1).strip("'\""))
        return YamlSyntaxProblem(line, column, (
            f"a second ': ' in the value of '{key}', which YAML takes for another key; put the value in quotes "
            f"({key}: \"...\")"))
    previous = _previous_content(lines, line)
    if previous is not None:
        found = _missing_space(lines, previous) or _indentation(lines, line)
        if found is not None:
            return found
        if _KEY.match(lines[previous - 1]) is None and _indent(lines[previous - 1]) == _indent(text):
            return YamlSyntaxProblem(previous, _indent(lines[previous - 1]) + 1, _NO_COLON)
    return None


def _glued(lines: list[str], problem: str, context: str, at: Place | None, opened: Place | None) -> Found:
    """A "key:value" with no space, on the line PyYAML stopped at or on the one before it."""
    if at is None:
        return None
    previous = _previous_content(lines, at[0])
    return _missing_space(lines, at[0]) or (_missing_space(lines, previous) if previous else None)


def _undefined_alias(lines: list[str], problem: str, context: str, at: Place | None, opened: Place | None) -> Found:
    match = re.fullmatch(r"found undefined alias '(.*)'", problem)
    if match is None or at is None:
        return None
    name = _short(match.group(1))
    return _placed(at, f"'*{name}' refers to an anchor '&{name}' that is not defined above it; "
                                  "a value starting with '*' must be quoted")


def _second_document(lines: list[str], problem: str, context: str, at: Place | None, opened: Place | None) -> Found:
    if problem != "but found another document" or at is None:
        return None
    return _placed(at, "a second YAML document starts here ('---'); aiosd reads one: remove this "
                                  "line or merge the documents")


def _unknown_tag(lines: list[str], problem: str, context: str, at: Place | None, opened: Place | None) -> Found:
    match = re.fullmatch(r"could not determine a constructor for the tag '(.*)'", problem)
    if match is None or at is None:
        return None
    return _placed(at, f"the tag '{_short(match.group(1))}' means nothing to aiosd; a value starting "
                                  "with '!' must be quoted")


_DESCRIBERS = (
    _tab,
    _bad_start,
    _unclosed_quote,
    _unclosed_bracket,
    _stray_closer,
    _quote_run_on,
    _text_after_quote,
    _block_out_of_place,
    _colon_out_of_place,
    _undefined_alias,
    _second_document,
    _unknown_tag,
    _glued,
)
