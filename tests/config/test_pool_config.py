"""The pool's config: kernels:, scheduler:, health:, auth.keys with names and limits, models.map.<id>.priority."""

from __future__ import annotations

from aiosd.config.loader import load_config
from tests.support.config_files import problems, where, write


def test_without_kernels_the_kernel_section_is_a_pool_of_one(tmp_path):
    text = 'kernel: {url: "http://user:secret@localhost:8000", max_concurrency: 6}\n'
    config = load_config(write(tmp_path, text), env={})
    (only,) = config.pool
    assert only.url == "http://user:secret@localhost:8000" and only.max_concurrency == 6
    assert only.name == "localhost:8000"  # never the password
    assert config.scheduler.classes == ("interactive", "background") and config.scheduler.default_class == "interactive"


def test_kernels_take_the_shared_settings_and_their_own_url_and_slots(tmp_path):
    text = """\
kernel: {timeout: 90s, max_concurrency: 3, agent_name: claw}
kernels:
  - {url: "http://a:8000/", name: a}
  - {url: "http://b:8000", max_concurrency: 12, weight: 2, labels: {gpu: a100}}
"""
    a, b = load_config(write(tmp_path, text), env={}).pool
    assert (a.name, a.url, a.max_concurrency, a.timeout, a.agent_name) == ("a", "http://a:8000", 3, 90.0, "claw")
    assert (b.name, b.max_concurrency, b.weight, b.labels) == ("b:8000", 12, 2.0, (("gpu", "a100"),))


def test_key_entries_keep_the_old_forms_and_gain_names_classes_and_limits(tmp_path):
    text = """\
auth:
  keys:
    - "plain-key-123"
    - {env: CRON_KEY, name: cron, priority: background, weight: 0.5, max_in_flight: 2, max_queued: 10}
    - {key: "literal-key-123", name: alice}
models:
  map:
    heartbeat: {kernel_model: m, priority: background}
"""
    config = load_config(write(tmp_path, text), env={"CRON_KEY": "from-the-env-123"})
    assert config.auth.keys == ("plain-key-123", "from-the-env-123", "literal-key-123")
    plain, cron, alice = config.auth.clients
    assert plain.name == "key-1" and plain.priority is None
    assert (cron.name, cron.priority, cron.weight, cron.max_in_flight, cron.max_queued) == (
        "cron", "background", 0.5, 2, 10)
    assert alice.name == "alice"
    assert config.models.map[0].priority == "background"
    assert config.auth.client_at(None).name == "anonymous"


def test_unknown_classes_duplicate_names_and_ambiguous_keys_are_reported_in_place(tmp_path):
    text = """\
scheduler: {classes: [fast, slow], default_class: medium}
kernels:
  - {url: "http://a:1", name: same}
  - {url: "http://b:1", name: same}
auth:
  keys:
    - {key: "literal-key-123", env: ALSO, name: x}
    - {key: "another-key-123", priority: urgent}
models:
  map:
    sonnet: {kernel_model: m, priority: interactive}
health: {base_ejection: 1m, max_ejection: 10s}
"""
    found = {p.key: p for p in problems(write(tmp_path, text), env={"ALSO": "whatever-123"})}
    assert "not one of scheduler.classes (fast, slow)" in found["scheduler.default_class"].message
    assert where(found["kernels[1].name"])[0] == 4
    assert "two kernels are named 'same'" in found["kernels[1].name"].message
    assert "exactly one of key, env or file" in found["auth.keys[0]"].message
    assert "'urgent' is not one of scheduler.classes" in found["auth.keys[1].priority"].message
    assert "'interactive' is not one of" in found["models.map.sonnet.priority"].message
    assert "health.base_ejection" in found["health.max_ejection"].message
