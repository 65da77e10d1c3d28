"""Health: outlier ejection after consecutive gateway failures, a growing capped backoff, rejoining by a probe."""

from __future__ import annotations

from aiosd.config.settings import HealthSettings
from aiosd.errors import KernelRateLimited, KernelRejected, KernelTimeout, KernelUnreachable
from aiosd.kernel.health import Health, fails_over, is_gateway_failure

REFUSED = KernelUnreachable("refused", kernel_status=0)


def health(now, **settings) -> Health:
    values = {"consecutive_failures": 3, "base_ejection": 10.0, "max_ejection": 35.0, **settings}
    return Health(HealthSettings(**values), clock=lambda: now[0])


def test_three_gateway_failures_in_a_row_eject_and_a_success_between_resets_the_count():
    now = [0.0]
    h = health(now)
    assert not h.record_failure(REFUSED) and not h.record_failure(REFUSED)
    h.record_success()
    assert not h.record_failure(REFUSED) and not h.record_failure(REFUSED)
    assert h.record_failure(REFUSED) and h.ejected
    assert h.view().state == "ejected" and h.view().ejected_for == 10.0


def test_request_errors_never_eject():
    now = [0.0]
    h = health(now, consecutive_failures=1)
    for error in (KernelRateLimited("429", kernel_status=429), KernelRejected("too long", kernel_status=400)):
        assert not h.record_failure(error)
    assert not h.ejected


def test_the_kernel_stays_out_for_its_backoff_then_rejoins_on_a_good_probe():
    now = [0.0]
    h = health(now, consecutive_failures=1)
    h.record_failure(REFUSED)
    now[0] = 5.0
    assert h.record_probe(True) is None and h.ejected  # Envoy keeps it out for the whole backoff
    now[0] = 10.0
    assert h.view().state == "probing"
    assert h.record_probe(True) == "rejoined" and not h.ejected


def test_each_ejection_in_a_row_doubles_the_backoff_up_to_the_cap_and_a_healthy_spell_resets_it():
    now = [0.0]
    h = health(now, consecutive_failures=1)
    lengths = []
    for _ in range(4):
        h.record_failure(REFUSED) if not h.ejected else h.record_probe(False)
        lengths.append(h.ejected_until - now[0])
        now[0] = h.ejected_until
    assert lengths == [10.0, 20.0, 35.0, 35.0]
    assert h.record_probe(True) == "rejoined"
    now[0] += 100  # healthy for longer than max_ejection
    h.record_failure(REFUSED)
    assert h.ejected_until - now[0] == 10.0


def test_what_fails_over_and_what_ejects():
    assert is_gateway_failure(REFUSED) and is_gateway_failure(KernelTimeout("hung"))
    assert is_gateway_failure(KernelRejected("500", kernel_status=500))
    assert fails_over(KernelRateLimited("429", kernel_status=429))
    assert not is_gateway_failure(KernelRateLimited("429", kernel_status=429))
    assert not fails_over(KernelRejected("context too long", kernel_status=400))
    assert not fails_over(KernelRejected("bad body", kernel_status=422))


def test_a_real_answer_ends_an_ejection_at_once_a_probe_only_after_the_backoff():
    now = [0.0]
    h = health(now, consecutive_failures=1)
    h.record_failure(REFUSED)
    assert h.record_probe(True) is None and h.ejected
    assert h.record_success() and not h.ejected


def test_a_kernel_lacking_the_model_fails_over_but_is_not_ejected_for_it():
    from aiosd.kernel.errors import kernel_error_for_status

    lacking = kernel_error_for_status(500, "Selected LLMs are not all available.", retry_after=None, inside_200=True)
    now = [0.0]
    h = health(now, consecutive_failures=1)
    assert fails_over(lacking) and not h.record_failure(lacking) and not h.ejected
