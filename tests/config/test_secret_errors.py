"""A config error never shows a secret (issue 11 item 5): not in the message, the journal, /status or STATUS=.

The place and what is wrong stay; the value is described by its kind, a URL shown without its password.
"""

from __future__ import annotations

import httpx
import pytest

from aiosd.config.loader import ConfigError, load_config
from tests.support.aiosd_harness import free_port
from tests.support.daemon_process import close_daemon, daemon_config, start_daemon, write_by_rename
from tests.support.fake_kernel import FakeKernel

SECRET = "sk-live-4f9c2b7e1d"
PASSWORD = "hunter2-Zq8"

CASES = [
    # The review's reproduction: a key where a list of keys belongs.
    (f'auth: {{keys: "{SECRET}"}}\n',
     "1:14: auth.keys: must be a list (like [a, b], or one '- item' per line), got string "
     "(not shown: it may be a secret)"),
    (f"auth: {{keys: [{SECRET}, 12345678901234]}}\n",
     "1:35: auth.keys[1]: must be a key (text of at least 8 characters), {key: KEY}, {env: NAME} or {file: PATH}, "
     "got integer "
     "(not shown: it may be a secret)"),
    (f'auth: "{SECRET}"\n',
     "1:7: auth: must be a mapping (indented key: value lines), got string (not shown: it may be a secret)"),
    (f"auth:\n  keys:\n    - {{{SECRET}: x}}\n",
     "3:8: auth.keys[0]: unknown key (not shown: it may be a secret); an entry is a key (text of at least 8 "
     "characters), {key: KEY}, {env: NAME} or {file: PATH}"),
    (f"auth:\n  keys:\n    {SECRET}: 1\n    {SECRET}: 2\n",
     "4:5: auth.keys: a key is written twice, at line 3 and at line 4; keep one"),
    (f"auth:\n  keys: [!!int {SECRET}]\n",
     "2:10: invalid YAML: this value cannot be read as an int; quote it if it is meant as text"),
    ("openclaw: {api_key: 12345678901234}\n",
     "1:21: openclaw.api_key: must be text or null, got integer (not shown: it may be a secret)"),
    (f"openclaw: {{api_key: [{SECRET}]}}\n", "1:21: openclaw.api_key: must be text or null, got a list"),
    (f"openclaw: {{api_key: !!float {SECRET}}}\n",
     "1:21: invalid YAML: this value cannot be read as a float; quote it if it is meant as text"),
    # A password in a URL: the URL is shown, its userinfo is not.
    (f'kernel: {{url: "aios:{PASSWORD}@localhost:8000"}}\n',
     "1:15: kernel.url: needs http:// or https:// (e.g. http://localhost:8000), got '***@localhost:8000'"),
    (f'kernel: {{url: "http://aios:{PASSWORD} x@localhost:8000"}}\n',
     "1:15: kernel.url: must be a URL like http://localhost:8000: a host after the scheme, and no spaces; got "
     "'http://***@localhost:8000'"),
    (f'openclaw: {{base_url: "me:{PASSWORD}@127.0.0.1:8700/v1"}}\n',
     "1:22: openclaw.base_url: needs http:// or https:// (e.g. http://127.0.0.1:8700/v1), got '***@127.0.0.1:8700/v1'"),
]


@pytest.mark.parametrize("text, expected", CASES, ids=[c[1].split(": ")[1] + f" {i}" for i, c in enumerate(CASES)])
def test_a_wrong_value_where_a_secret_sits_is_described_not_shown(tmp_path, text, expected):
    path = tmp_path / "aiosd.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    shown = [str(p).removeprefix(f"{path}:") for p in caught.value.problems]
    assert shown == [expected]
    assert SECRET not in str(caught.value) and PASSWORD not in str(caught.value)


def test_a_refused_reload_keeps_the_key_out_of_the_journal_status_and_systemd_status_line(tmp_path):
    port = free_port()
    with FakeKernel() as kernel:
        text = daemon_config(kernel.url, port)
        daemon = start_daemon(tmp_path, text, port)
        try:
            write_by_rename(daemon.config_path, text + f'auth: {{keys: "{SECRET}"}}\n')
            _, ready = daemon.wait_for_reload()
            status = httpx.get(daemon.url + "/status", timeout=5).text
        finally:
            close_daemon(daemon)
    journal = daemon.process.stderr_text()
    # Refused, and said where and why...
    assert "REFUSED" in ready["STATUS"] and "auth.keys: must be a list" in ready["STATUS"]
    assert "auth.keys: must be a list" in status
    assert any(line.startswith("<3>") and "auth.keys: must be a list" in line for line in journal.splitlines())
    # ...and the key itself nowhere.
    for place in (ready.raw, status, journal):
        assert SECRET not in place
