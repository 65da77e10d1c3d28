"""One run of the loader reports every problem: the rules past the schema (a listen port out of range, ...) speak
up beside the schema's findings instead of after they are fixed."""

from __future__ import annotations

from tests.support.config_files import problems, where, write


def test_a_bad_listen_port_is_reported_together_with_the_schemas_problems(tmp_path):
    path = write(tmp_path, 'listen: "127.0.0.1:99999"\nkernel:\n  timeout: soon\nretry:\n  max_retries: lots\n'
                           'logging: {level: loud}\nmodels:\n  map:\n    sonnet: {kernel_model: 3}\n')
    found = problems(path)
    assert [where(p) for p in found] == [(1, 9, "listen"), (3, 12, "kernel.timeout"), (5, 16, "retry.max_retries"),
                                         (6, 18, "logging.level"), (9, 28, "models.map.sonnet.kernel_model")]
    assert found[0].message == "port must be between 1 and 65535, got 99999"


def test_rules_in_untouched_sections_and_unknown_keys_come_together(tmp_path):
    path = write(tmp_path, 'listen: "127.0.0.1:0"\nbogus: 1\nkernel: {timeout: 0s}\n'
                           'health: {base_ejection: 10s, max_ejection: 1s}\n')
    assert [where(p) for p in problems(path)] == [(1, 9, "listen"), (2, 1, "bogus"), (3, 19, "kernel.timeout"),
                                                  (4, 44, "health.max_ejection")]


def test_a_rule_across_keys_of_a_section_the_schema_refused_is_not_guessed_at(tmp_path):
    # backoff.initial is refused, so whether max is at least initial cannot be known: only the schema's word.
    path = write(tmp_path, 'retry: {backoff: {initial: soon, max: 1s}}\n')
    assert [where(p) for p in problems(path)] == [(1, 28, "retry.backoff.initial")]
