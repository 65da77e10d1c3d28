"""Safe YAML loading that rejects duplicate keys and remembers where every value stands."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

KeyPath = tuple[Any, ...]  # keys (any YAML scalar) and list indexes from the top of the document

# The most values (scalars, mappings, lists) a config may stand for once its aliases (*name) are
# expanded. A real config has a few hundred; a 626-byte "billion laughs" of nested aliases stands
# for 10^9, and everything that walks the document (the schema, the checks) would take for ever.
MAX_YAML_NODES = 100_000


@dataclass(frozen=True, slots=True)
class Position:
    line: int  # 1-based, as editors show it
    column: int  # 1-based


class DuplicateKeyError(yaml.MarkedYAMLError):
    """A key written twice in one mapping; ``key_path`` is where (the keys above it, then the key)."""

    def __init__(self, problem: str, problem_mark: yaml.Mark, key_path: KeyPath, lines: tuple[int, int]) -> None:
        super().__init__(None, None, problem, problem_mark)
        self.key_path = key_path
        self.lines = lines  # where the key was written first, and again


class AliasExpansionError(yaml.MarkedYAMLError):
    """Valid YAML that stands for too many values once its aliases are expanded, or for a recursive one."""

    def __init__(self, problem: str, problem_mark: yaml.Mark) -> None:
        super().__init__(None, None, problem, problem_mark)


class PositionedDict(dict[Any, Any]):
    """A mapping that also knows where each key and each value were written."""

    __slots__ = ("key_positions", "position", "value_positions")
    key_positions: dict[Any, Position]
    value_positions: dict[Any, Position]
    position: Position


def empty_mapping() -> PositionedDict:
    """The document of a file with no keys (empty, or only comments)."""
    result = PositionedDict()
    result.key_positions, result.value_positions, result.position = {}, {}, Position(1, 1)
    return result


class PositionedList(list[Any]):
    """A list that also knows where each item was written."""

    __slots__ = ("item_positions", "position")
    item_positions: list[Position]
    position: Position


def _position(mark: yaml.Mark) -> Position:
    return Position(mark.line + 1, mark.column + 1)


class _PositionLoader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.key_path: list[Any] = []  # the keys above the value being built, for error messages

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node)  # before anything is built from it
        return self.construct_document(node)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, IndexError, OverflowError):
            # PyYAML's scalar constructors raise bare errors with no position for values such as
            # an unquoted 2024-13-45 (read as a date) or !!int "": report them where they stand.
            # Neither the value nor the error's text (which quotes it) is shown: it may be a secret.
            kind = node.tag.rpartition(":")[2]
            raise yaml.constructor.ConstructorError(
                None, None, f"this value cannot be read as {'an' if kind[:1] in 'aeiou' else 'a'} {kind}; quote it "
                "if it is meant as text", node.start_mark,
            ) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> PositionedDict:
        self.flatten_mapping(node)
        result = PositionedDict()
        result.key_positions = {}
        result.value_positions = {}
        result.position = _position(node.start_mark)
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, "found an unhashable key", key_node.start_mark
                ) from None
            if key in result:
                first = result.key_positions[key]
                again = _position(key_node.start_mark)
                raise DuplicateKeyError(
                    f"key {key!r} is written twice, at line {first.line} and at line {again.line}; keep one",
                    key_node.start_mark,
                    (*self.key_path, key),
                    (first.line, again.line),
                )
            self.key_path.append(key)
            result[key] = self.construct_object(value_node, deep=True)
            self.key_path.pop()
            result.key_positions[key] = _position(key_node.start_mark)
            result.value_positions[key] = _position(value_node.start_mark)
        return result

    def construct_sequence(self, node: yaml.SequenceNode, deep: bool = False) -> PositionedList:
        result = PositionedList()
        for index, child in enumerate(node.value):
            self.key_path.append(index)
            result.append(self.construct_object(child, deep=True))
            self.key_path.pop()
        result.item_positions = [_position(child.start_mark) for child in node.value]
        result.position = _position(node.start_mark)
        return result


_PositionLoader.add_constructor("tag:yaml.org,2002:map", _PositionLoader.construct_mapping)
_PositionLoader.add_constructor("tag:yaml.org,2002:seq", _PositionLoader.construct_sequence)


def _check_expanded_size(root: yaml.Node) -> None:
    """Refuse a document standing for more than ``MAX_YAML_NODES`` values once its aliases are expanded.

    Counted on the composed nodes, where an alias is the node it names: each node's expanded size
    is computed once (linear in the file, however the aliases nest). An alias inside the node it
    names (a recursive document) is refused too: no config needs one.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            active.discard(key)
            size = 1 + sum(sizes[id(child)] for child in _children(node))
            if size > MAX_YAML_NODES:
                raise AliasExpansionError(
                    f"this value stands for more than {MAX_YAML_NODES} values once its aliases (*name) are "
                    "expanded; refused before it is built (a config needs far fewer): use fewer nested aliases",
                    node.start_mark)
            sizes[key] = size
            continue
        if key in sizes:
            continue
        if key in active:
            raise AliasExpansionError(
                "an alias (*name) refers to a value that contains it; a config cannot be recursive", node.start_mark)
        active.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def load_yaml_with_positions(text: str) -> Any:
    """Parse one YAML document; raises yaml.YAMLError (with marks) on bad YAML or duplicate keys."""
    return yaml.load(text, Loader=_PositionLoader)


def position_of(document: object, path: KeyPath, *, key: bool = False) -> Position | None:
    """Where the value (or with key=True, the key) at ``path`` was written; the nearest parent if unknown."""
    node = document
    best: Position | None = getattr(document, "position", None)
    for index, part in enumerate(path):
        last = index == len(path) - 1
        if isinstance(node, PositionedDict) and part in node:
            best = (node.key_positions if key and last else node.value_positions)[part]
            node = node[part]
        elif isinstance(node, PositionedList) and isinstance(part, int) and 0 <= part < len(node):
            best = node.item_positions[part]
            node = node[part]
        else:
            break
    return best
