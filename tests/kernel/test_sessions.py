"""Sessions within an API key: fair share between them, kernel affinity with a bounded wait, the
per-session limit, and a session table that stays bounded however many ids clients send."""

from __future__ import annotations

import asyncio
import sys

import httpx

from aiosd.config.settings import ClientKey, HealthSettings, SchedulerSettings
from aiosd.errors import KernelUnreachable
from aiosd.kernel.pool import KernelPool
from aiosd.kernel.scheduler import Scheduler
from aiosd.kernel.sessions import SessionTable
from tests.support.kernel_calls import kernel_settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def scheduler_for(*slots: int, clock=None, aging: float = 0.0, affinity_wait: float = 1.0,
                  max_sessions: int = 10000, session_idle: float = 600.0) -> Scheduler:
    """A scheduler over kernels k0, k1, ... with ``slots`` slots each (no kernel is ever called)."""
    clock = clock or Clock()
    settings = tuple(kernel_settings(f"http://k{i}.test", name=f"k{i}", max_concurrency=n)
                     for i, n in enumerate(slots))
    never_called = httpx.MockTransport(lambda r: httpx.Response(500))
    pool = KernelPool(settings, HealthSettings(consecutive_failures=1), transport=never_called, clock=clock)
    return Scheduler(pool, SchedulerSettings(classes=("interactive", "background"), aging=aging,
                                             affinity_wait=affinity_wait, max_sessions=max_sessions,
                                             session_idle=session_idle), clock=clock)


def key(s: Scheduler, name: str = "gateway", **limits):
    return s.key_state(ClientKey(name, **limits))


class Requests:
    """Requests of one key as tasks, recording the order in which they got a slot."""

    def __init__(self, s: Scheduler, k) -> None:
        self.s, self.k = s, k
        self.order: list[str] = []
        self.got: dict[str, object] = {}
        self.tasks: list[asyncio.Task] = []

    def send(self, label: str, session_id: str | None, **options) -> asyncio.Task:
        session = self.s.session(self.k, session_id)

        async def request():
            kernel = await self.s.acquire("m", key=self.k, session=session, **options)
            self.order.append(label)
            self.got[label] = kernel
            return kernel, session

        task = asyncio.create_task(request())
        self.tasks.append(task)
        return task


async def test_one_sessions_burst_of_50_delays_another_sessions_single_request_by_at_most_one_slot():
    s = scheduler_for(2)
    gw = key(s)
    r = Requests(s, gw)
    for i in range(50):
        r.send(f"burst{i}", "agent:main:subagent-loop")
    await settle()
    assert r.order == ["burst0", "burst1"] and s.queued == 48
    r.send("chat", "agent:main:user-chat")
    await settle()
    held = [s.pool.first(), s.pool.first()]
    s.release(held[0], gw, session=s.session(gw, "agent:main:subagent-loop"))
    await settle()
    # The next free slot goes to the chat, not to the burst's 49th request of the same key.
    assert r.order[-1] == "chat"
    s.release(held[1], gw, session=s.session(gw, "agent:main:subagent-loop"))
    await settle()
    assert r.order[-1] == "burst2"
    for t in r.tasks:
        t.cancel()


async def test_without_sessions_a_burst_of_one_key_delays_the_next_request_by_its_whole_queue():
    """The key-level queue of before: requests without a session id are one session, in arrival order."""
    s = scheduler_for(2)
    gw = key(s)
    r = Requests(s, gw)
    for i in range(10):
        r.send(f"burst{i}", None)
    r.send("chat", None)
    await settle()
    for _ in range(9):
        s.release(s.pool.first(), gw)
        await settle()
    assert r.order.index("chat") == 10
    for t in r.tasks:
        t.cancel()


async def test_requests_without_a_session_id_count_as_one_session_of_their_own():
    s = scheduler_for(1)
    gw = key(s)
    r = Requests(s, gw)
    for i in range(5):
        r.send(f"burst{i}", "loop")
    await settle()
    r.send("plain", None)
    await settle()
    s.release(s.pool.first(), gw, session=s.session(gw, "loop"))
    await settle()
    assert r.order == ["burst0", "plain"]
    for t in r.tasks:
        t.cancel()


async def test_aging_still_raises_a_waiting_session_request_above_the_busier_class():
    clock = Clock()
    s = scheduler_for(1, clock=clock, aging=30.0)
    user, cron = key(s, "user"), key(s, "cron")
    session = s.session(cron, "cron:nightly")
    held = await s.acquire("m", key=user)
    order: list[str] = []

    async def one(label, k, level, sess=None):
        got = await s.acquire("m", key=k, level=level, session=sess)
        order.append(label)
        return got

    background = asyncio.create_task(one("cron", cron, 1, session))
    await settle()
    clock.now += 31  # past scheduler.aging: the cron request now ranks as interactive
    interactive = asyncio.create_task(one("user", user, 0))
    await settle()
    s.release(held, user)
    await settle()
    assert order == ["cron"]
    s.release(await background, cron, session=session)
    await settle()
    assert order == ["cron", "user"]
    s.release(await interactive, user)


async def test_a_session_stays_on_its_kernel_while_it_is_healthy_even_when_another_is_less_loaded():
    s = scheduler_for(4, 4)
    gw = key(s)
    session = s.session(gw, "chat")
    first = await s.acquire("m", key=gw, session=session)
    s.release(first, gw, session=session)
    home = first.name
    other = next(k.name for k in s.pool if k.name != home)
    # Other work on the session's kernel: it is now the busier one, still with free slots.
    others = [await s.acquire("m", key=gw, exclude=frozenset({other})) for _ in range(2)]
    assert s.pool.members[home].in_flight == 2 and s.pool.members[other].in_flight == 0
    for _ in range(5):
        got = await s.acquire("m", key=gw, session=session)
        assert got.name == home
        s.release(got, gw, session=session)
    assert s.affinity_kept_total == 5 and s.affinity_moved_total == 0
    # A request without a session still goes to the least loaded kernel.
    plain = await s.acquire("m", key=gw)
    assert plain.name == other
    for k in [*others, plain]:
        s.release(k, gw)


async def test_a_session_moves_when_its_kernel_is_ejected():
    s = scheduler_for(2, 2)
    gw = key(s)
    session = s.session(gw, "chat")
    got = await s.acquire("m", key=gw, session=session)
    s.release(got, gw, session=session)
    home = got.name
    s.pool.note_health(got, got.note_call(0.1, KernelUnreachable("refused")))
    assert got.health.ejected
    moved = await s.acquire("m", key=gw, session=session)
    assert moved.name != home and session.kernel == moved.name
    assert s.affinity_moved_total == 1
    s.release(moved, gw, session=session)
    # It stays on its new kernel afterwards.
    again = await s.acquire("m", key=gw, session=session)
    assert again.name == moved.name
    s.release(again, gw, session=session)


async def test_a_full_kernel_holds_the_session_within_the_bound_and_it_moves_past_it():
    clock = Clock()
    s = scheduler_for(1, 1, clock=clock, affinity_wait=0.2)
    gw = key(s)
    session = s.session(gw, "chat")
    first = await s.acquire("m", key=gw, session=session)
    home = first.name
    request = asyncio.create_task(s.acquire("m", key=gw, session=session))
    await settle()
    # The other kernel is free, but the session waits for its own (it will free soon).
    assert not request.done() and s.queued == 1
    clock.now += 0.1
    s.dispatch()
    await settle()
    assert not request.done()
    clock.now += 0.15  # past scheduler.affinity_wait: the timer the scheduler armed moves it
    moved = await asyncio.wait_for(request, 10)
    assert moved.name != home and session.kernel == moved.name
    assert s.affinity_moved_total == 1
    s.release(first, gw, session=session)
    s.release(moved, gw, session=session)


async def test_a_session_gets_its_own_kernel_back_when_it_frees_within_the_bound():
    clock = Clock()
    s = scheduler_for(1, 1, clock=clock, affinity_wait=2.0)
    gw = key(s)
    session = s.session(gw, "chat")
    first = await s.acquire("m", key=gw, session=session)
    request = asyncio.create_task(s.acquire("m", key=gw, session=session))
    await settle()
    clock.now += 0.5
    s.release(first, gw, session=session)
    again = await asyncio.wait_for(request, 10)
    assert again is first and s.affinity_kept_total == 1
    s.release(again, gw, session=session)


async def test_a_slot_held_for_a_session_is_not_idle_for_other_work():
    """Work conservation: while one session waits for its kernel, others take the free kernel."""
    clock = Clock()
    s = scheduler_for(1, 1, clock=clock, affinity_wait=5.0)
    gw = key(s)
    chat = s.session(gw, "chat")
    first = await s.acquire("m", key=gw, session=chat)
    held = asyncio.create_task(s.acquire("m", key=gw, session=chat))
    await settle()
    cron = s.session(gw, "cron")
    other = await asyncio.wait_for(s.acquire("m", key=gw, session=cron), 10)
    assert other.name != first.name and not held.done()
    s.release(first, gw, session=chat)
    assert (await asyncio.wait_for(held, 10)) is first
    s.release(first, gw, session=chat)
    s.release(other, gw, session=cron)


async def test_new_sessions_are_spread_over_the_kernels_as_sessions_come_and_go():
    clock = Clock()
    s = scheduler_for(4, 4, 4, clock=clock, session_idle=60.0)
    gw = key(s)

    async def one_call(name: str) -> str:
        session = s.session(gw, name)
        got = await s.acquire("m", key=gw, session=session)
        s.release(got, gw, session=session)
        return got.name

    placed = [await one_call(f"s{i}") for i in range(9)]
    assert sorted(placed) == ["k0"] * 3 + ["k1"] * 3 + ["k2"] * 3
    # The sessions on k1 end (idle past session_idle) while the others stay active.
    clock.now += 61
    for i, kernel in enumerate(placed):
        if kernel != "k1":
            await one_call(f"s{i}")
    for _ in range(3):
        s.sessions.prune()
    assert s.sessions.sessions_on("k1") == 0 and len(s.sessions) == 6
    newcomers = [await one_call(f"new{i}") for i in range(3)]
    assert newcomers == ["k1"] * 3


async def test_max_in_flight_per_session_leaves_the_keys_other_slots_to_its_other_sessions():
    s = scheduler_for(4)
    gw = key(s, max_in_flight_per_session=2)
    r = Requests(s, gw)
    for i in range(6):
        r.send(f"loop{i}", "loop")
    await settle()
    assert r.order == ["loop0", "loop1"] and s.in_flight == 2 and s.queued == 4
    r.send("chat", "chat")
    r.send("plain", None)
    await settle()
    assert r.order == ["loop0", "loop1", "chat", "plain"]
    loop = s.session(gw, "loop")
    assert loop.in_flight == 2 and loop.queued == 4
    s.release(r.got["loop0"], gw, session=loop)
    await settle()
    assert r.order[-1] == "loop2" and loop.in_flight == 2
    for t in r.tasks:
        t.cancel()


async def test_100000_distinct_session_ids_keep_the_table_within_its_bound():
    s = scheduler_for(2, 2, max_sessions=1000)
    gw = key(s)
    sizes = []
    for i in range(100_000):
        session = s.session(gw, f"{i:08x}-attacker-session:0")
        got = await s.acquire("m", key=gw, session=session)
        s.release(got, gw, session=session)
        if i % 500 == 0:
            sizes.append(sys.getsizeof(s.sessions._states))
    table = s.sessions
    assert len(table) == 1000
    assert sum(table.sessions_on(k.name) for k in s.pool) == 1000
    # The table's memory stops growing once it is full: the last 90,000 ids cost nothing more.
    assert max(sizes[20:]) <= max(sizes[:20])
    assert table.forgotten_total == 100_000 - 1000
    assert s.classes_status()[0]["keys"][0]["sessions_active"] == 1000


async def test_a_table_full_of_busy_sessions_counts_a_new_session_key_level():
    s = scheduler_for(8, max_sessions=2)
    gw = key(s)
    a, b = s.session(gw, "a"), s.session(gw, "b")
    held = [await s.acquire("m", key=gw, session=a), await s.acquire("m", key=gw, session=b)]
    third = s.session(gw, "c")
    assert third is gw.default_session and s.sessions.overflow_total == 1
    for kernel, session in zip(held, (a, b), strict=True):
        s.release(kernel, gw, session=session)
    assert s.session(gw, "c").tracked  # room again: the idle ones make way


def test_idle_sessions_are_forgotten_and_the_id_is_never_kept():
    clock = Clock()
    table = SessionTable(100, 600.0, clock=clock)
    state = table.get("gateway", "0b6d1d3a-1f8e-4b7e-9d3e-1234567890ab:0")
    assert state is not None and len(state.short) == 8 and int(state.short, 16) >= 0
    assert "0b6d1d3a" not in state.short and all("0b6d1d3a" not in str(v) for v in vars_of(state))
    assert table.get("other-key", "0b6d1d3a-1f8e-4b7e-9d3e-1234567890ab:0") is not state  # per key
    clock.now += 601
    table.prune()
    assert len(table) == 0 and table.forgotten_total == 2


def vars_of(state) -> list:
    return [getattr(state, name) for name in state.__slots__]


def test_a_lower_max_sessions_from_a_reload_is_reached_as_new_sessions_come():
    table = SessionTable(10, 600.0, clock=Clock())
    for i in range(10):
        table.get("gateway", f"s{i}")
    table.max_sessions = 3
    table.get("gateway", "newcomer")
    assert len(table) == 3 and table.forgotten_total == 8
