"""Safe YAML loading that rejects duplicate keys and remembers where every value stands."""

from __future__ import annotations

from dataclasses import dataclass

import yaml


@dataclass(frozen=True, slots=True)
class Position:
    line: int  # 1-based, as editors show it
    column: int  # 1-based


class DuplicateKeyError(yaml.MarkedYAMLError):
    pass


class PositionedDict(dict):
    """A mapping that also knows where each key and each value were written."""

    __slots__ = ("key_positions", "value_positions", "position")


class PositionedList(list):
    __slots__ = ("item_positions", "position")


def _position(mark: yaml.Mark) -> Position:
    return Position(mark.line + 1, mark.column + 1)


class _PositionLoader(yaml.SafeLoader):
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
                raise DuplicateKeyError(
                    None,
                    None,
                    f"duplicate key {key!r} (first written at line {first.line})",
                    key_node.start_mark,
                )
            result[key] = self.construct_object(value_node, deep=True)
            result.key_positions[key] = _position(key_node.start_mark)
            result.value_positions[key] = _position(value_node.start_mark)
        return result

    def construct_sequence(self, node: yaml.SequenceNode, deep: bool = False) -> PositionedList:
        result = PositionedList(self.construct_object(child, deep=True) for child in node.value)
        result.item_positions = [_position(child.start_mark) for child in node.value]
        result.position = _position(node.start_mark)
        return result


_PositionLoader.add_constructor("tag:yaml.org,2002:map", _PositionLoader.construct_mapping)
_PositionLoader.add_constructor("tag:yaml.org,2002:seq", _PositionLoader.construct_sequence)


def load_yaml_with_positions(text: str):
    """Parse one YAML document; raises yaml.YAMLError (with marks) on bad YAML or duplicate keys."""
    return yaml.load(text, Loader=_PositionLoader)  # noqa: S506 - a SafeLoader subclass


def position_of(document, path: tuple, *, key: bool = False) -> Position | None:
    """Where the value (or with key=True, the key) at ``path`` was written; the nearest parent if unknown."""
    node = document
    best = getattr(document, "position", None)
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
