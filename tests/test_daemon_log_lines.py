"""What the real daemon's start-up and reload lines name: the pool's kernels, and which settings a reload changed."""

from __future__ import annotations

from tests.support.aiosd_harness import free_port
from tests.support.daemon_process import close_daemon, daemon_config, start_daemon, write_by_rename
from tests.support.fake_kernel import FakeKernel


def test_start_names_the_pool_and_a_reload_names_the_keys_it_changed(tmp_path):
    with FakeKernel(record=False) as first, FakeKernel(record=False) as second:
        port = free_port()
        pool = f'kernels:\n  - {{url: "{first.url}", name: east}}\n  - {{url: "{second.url}"}}\n'
        # kernel.url stays the unused default (localhost:8000): the line must not name it.
        text = daemon_config("http://localhost:8000", port, extra=pool)
        daemon = start_daemon(tmp_path, text, port)
        try:
            write_by_rename(daemon.config_path, text.replace("max_retries: 0", "max_retries: 1")
                            + "scheduler: {aging: 0s}\n")
            daemon.wait_for_reload()
            write_by_rename(daemon.config_path, daemon.config_path.read_text() + "# a comment\n")
            daemon.wait_for_reload()
        finally:
            close_daemon(daemon)
        lines = daemon.process.stderr_lines()
    started = next(line for line in lines if "listening on http://" in line)
    assert f"(kernels east {first.url}, {second.url}, config {daemon.config_path})" in started
    assert "localhost:8000" not in started
    assert started.endswith("; event loop uvloop")  # server.event_loop's default
    reloaded = [line for line in lines if "config reloaded (file changed)" in line]
    assert reloaded[0].endswith("generation 2 now serving; changed: retry, scheduler")
    assert reloaded[1].endswith("generation 3 now serving; no setting changed")
