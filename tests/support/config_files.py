"""Config files for loader tests: write one into a temp dir, and read back the problems the loader found."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiosd.config.loader import ConfigError, ConfigProblem, load_config


def write(tmp_path: Path, content: str | bytes, name: str = "aiosd.yaml") -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def problems(path: Path, env: dict[str, str] | None = None) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={} if env is None else env)
    assert str(caught.value) == "\n".join(str(p) for p in caught.value.problems)
    for problem in caught.value.problems:
        assert problem.file == str(path)
    return caught.value.problems


def only_problem(path: Path, env: dict[str, str] | None = None) -> ConfigProblem:
    found = problems(path, env)
    assert len(found) == 1, found
    return found[0]


def where(problem: ConfigProblem) -> tuple:
    return problem.line, problem.column, problem.key
