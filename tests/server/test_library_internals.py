"""The library internals aiosd builds on, each pinned by a test that names the library, its version and the internal.

Why: ``aiosd/server/connections.py`` subclasses uvicorn's httptools protocol (no public hook bounds
or times a request head), ``aiosd/daemon.py`` overrides ``uvicorn.Server.capture_signals`` (uvicorn
has no setting to leave signals alone) and runs uvicorn's start-up without sockets, accepting the
connections itself. A new release that changes one of these fails here with a plain sentence, not as a
hang or a wrong status code somewhere in the robustness tests.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import signal
import textwrap
from importlib.metadata import version
from typing import TYPE_CHECKING

import httptools
import pytest
import uvicorn
from uvicorn.server import ServerState

if TYPE_CHECKING:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

CONNECTIONS = "aiosd/server/connections.py"
DAEMON = "aiosd/daemon.py"


def broken(library: str, internal: str, user: str, what: str = "no longer has") -> str:
    return f"{library} {version(library)}: {internal.split('.')[0]} {what} {internal} ({user} relies on it)"


def httptools_protocol() -> type[HttpToolsProtocol]:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - only on a uvicorn that moved it
        pytest.fail(broken("uvicorn", "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol", CONNECTIONS,
                           "cannot import"))
    return HttpToolsProtocol


def assigned_in(function: object) -> set[str]:
    """The ``self.<name>`` attributes a method assigns."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))  # type: ignore[arg-type]
    return {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name) and node.value.id == "self"}


def called_in(function: object) -> set[str]:
    """The dotted names a method calls on ``self`` ("parser.feed_data", "send_400_response")."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))  # type: ignore[arg-type]
    calls = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts, target = [], node.func
            while isinstance(target, ast.Attribute):
                parts.append(target.attr)
                target = target.value
            if isinstance(target, ast.Name) and target.id == "self" and parts:
                calls.add(".".join(reversed(parts)))
    return calls


# --- uvicorn: the httptools protocol aiosd subclasses -------------------------------------------

# Methods GuardedHttpProtocol overrides (calling super()) or calls, with the parameters it passes.
PROTOCOL_METHODS = {
    "__init__": ["config", "server_state", "app_state", "_loop"],
    "connection_made": ["transport"],
    "connection_lost": ["exc"],
    "data_received": ["data"],
    "_unset_keepalive_if_required": [],
    "send_400_response": ["msg"],
    "on_message_begin": [],
    "on_header": ["name", "value"],
    "on_headers_complete": [],
    "on_body": ["body"],
    "on_message_complete": [],
    "on_response_complete": [],
    "pause_writing": [],
    "resume_writing": [],
}


@pytest.mark.parametrize("name", sorted(PROTOCOL_METHODS))
def test_uvicorn_httptools_protocol_has_the_methods_aiosd_overrides_or_calls(name):
    protocol = httptools_protocol()
    method = getattr(protocol, name, None)
    assert callable(method), broken("uvicorn", f"HttpToolsProtocol.{name}", CONNECTIONS)
    parameters = [p for p in inspect.signature(method).parameters if p != "self"]
    assert parameters == PROTOCOL_METHODS[name], broken(
        "uvicorn", f"HttpToolsProtocol.{name}({', '.join(PROTOCOL_METHODS[name])})", CONNECTIONS,
        f"changed the parameters to ({', '.join(parameters)}) of")


class _Transport(asyncio.Transport):
    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8700)}.get(name, default)

    def is_closing(self):
        return False


async def test_uvicorn_httptools_protocol_sets_the_attributes_aiosd_reads():
    config = uvicorn.Config(lambda scope, receive, send: None, http=httptools_protocol(), lifespan="off",
                            log_config=None)
    config.load()
    protocol = httptools_protocol()(config=config, server_state=ServerState(), app_state={},
                                     _loop=asyncio.get_running_loop())
    for name in ("parser", "loop", "connections", "timeout_keep_alive", "timeout_keep_alive_task", "cycle"):
        assert hasattr(protocol, name), broken("uvicorn", f"HttpToolsProtocol.{name}", CONNECTIONS)
    assert callable(getattr(protocol.parser, "feed_data", None)), broken(
        "uvicorn", "HttpToolsProtocol.parser.feed_data", CONNECTIONS)
    assert isinstance(protocol.connections, set), broken("uvicorn", "HttpToolsProtocol.connections (a set)",
                                                         CONNECTIONS)
    assert protocol.cycle is None and protocol.timeout_keep_alive_task is None, broken(
        "uvicorn", "HttpToolsProtocol.cycle and .timeout_keep_alive_task None until used", CONNECTIONS,
        "changed the start values of")
    protocol.connection_made(_Transport())
    assert protocol.client == ("127.0.0.1", 40000), broken("uvicorn", "HttpToolsProtocol.client", CONNECTIONS)
    assert protocol in protocol.connections, broken(
        "uvicorn", "HttpToolsProtocol.connections holding every open connection", CONNECTIONS, "changed")


def test_uvicorn_request_cycle_has_the_flags_aiosd_reads_and_sets():
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    found = assigned_in(RequestResponseCycle.__init__)
    for name in ("response_started", "response_complete", "disconnected", "message_event"):
        assert name in found, broken("uvicorn", f"RequestResponseCycle.{name}", CONNECTIONS)


def test_uvicorn_request_cycle_uses_only_write_close_and_is_closing_of_its_transport():
    # GuardedHttpProtocol gives each cycle a _OneSendPerAnswer as its transport (head and body in one
    # send), which has only these three; and it sets it on the cycle on_headers_complete has just made.
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    used = set()
    for _, member in inspect.getmembers(RequestResponseCycle, inspect.isfunction):
        used |= {call.removeprefix("transport.") for call in called_in(member) if call.startswith("transport.")}
    assert used <= {"write", "close", "is_closing"}, broken(
        "uvicorn", f"RequestResponseCycle calling transport.{sorted(used - {'write', 'close', 'is_closing'})}",
        CONNECTIONS, "now has")
    assert "cycle" in assigned_in(httptools_protocol().on_headers_complete), broken(
        "uvicorn", "HttpToolsProtocol.on_headers_complete making self.cycle", CONNECTIONS)
    assert "transport" in assigned_in(RequestResponseCycle.__init__), broken(
        "uvicorn", "RequestResponseCycle.transport", CONNECTIONS)


def test_uvicorn_data_received_does_nothing_aiosd_does_not_copy():
    # GuardedHttpProtocol.data_received replaces uvicorn's without calling it; a step uvicorn adds
    # there would be skipped by aiosd. Upgrades are not copied on purpose: aiosd runs with ws="none".
    copied = {"_unset_keepalive_if_required", "parser.feed_data", "logger.warning", "send_400_response",
              "_should_upgrade", "handle_websocket_upgrade", "_unsupported_upgrade_warning",
              "_get_upgrade", "_should_upgrade_to_ws"}  # the same upgrade step as uvicorn 0.30 (the floor) names it
    calls = called_in(httptools_protocol().data_received)
    assert "parser.feed_data" in calls, broken("uvicorn", "HttpToolsProtocol.data_received feeding self.parser",
                                               CONNECTIONS, "no longer has")
    new = calls - copied
    assert not new, broken("uvicorn", f"HttpToolsProtocol.data_received calling {sorted(new)}", CONNECTIONS,
                           "now has")


def test_uvicorn_queues_pipelined_requests_and_controls_flow_as_aiosd_bounds_them():
    # aiosd bounds uvicorn's pipeline (a deque, newest cycle appended left, the parsed one in
    # self.cycle) and replaces self.flow with a FlowControl subclass that keeps reading paused.
    from uvicorn.protocols.http import flow_control
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    protocol = httptools_protocol()
    assert "self.pipeline.appendleft" in inspect.getsource(protocol.on_headers_complete), broken(
        "uvicorn", "HttpToolsProtocol.on_headers_complete queueing pipelined cycles in self.pipeline", CONNECTIONS,
        "no longer has")
    assert "flow" in assigned_in(protocol.connection_made) and "pipeline" in assigned_in(protocol.__init__), broken(
        "uvicorn", "HttpToolsProtocol.flow and .pipeline", CONNECTIONS)
    for name in ("pause_reading", "resume_reading", "pause_writing", "resume_writing"):
        assert callable(getattr(flow_control.FlowControl, name, None)), broken(
            "uvicorn", f"FlowControl.{name}", CONNECTIONS)
    flow = flow_control.FlowControl(_Transport())
    assert (flow.read_paused, flow.write_paused) == (False, False), broken(
        "uvicorn", "FlowControl.read_paused and .write_paused", CONNECTIONS)
    assert isinstance(flow_control.HIGH_WATER_LIMIT, int), broken("uvicorn", "flow_control.HIGH_WATER_LIMIT",
                                                                  CONNECTIONS)
    assert {"body", "more_body", "keep_alive"} <= assigned_in(RequestResponseCycle.__init__), broken(
        "uvicorn", "RequestResponseCycle.body, .more_body and .keep_alive", CONNECTIONS)


def test_uvicorn_arms_its_keep_alive_timer_when_a_response_completes():
    # aiosd counts a connection idle when, after on_response_complete, timeout_keep_alive_task is set.
    assigned = assigned_in(httptools_protocol().on_response_complete)
    assert "timeout_keep_alive_task" in assigned, broken(
        "uvicorn", "HttpToolsProtocol.on_response_complete arming timeout_keep_alive_task", CONNECTIONS,
        "no longer does")


# --- uvicorn: the server aiosd embeds --------------------------------------------------------


def test_uvicorn_server_has_the_hooks_the_daemon_overrides():
    for name, parameters in (("capture_signals", []), ("startup", ["sockets"]), ("serve", ["sockets"])):
        method = getattr(uvicorn.Server, name, None)
        assert callable(method), broken("uvicorn", f"Server.{name}", DAEMON)
        found = [p for p in inspect.signature(method).parameters if p != "self"]
        assert found == parameters, broken("uvicorn", f"Server.{name}({', '.join(parameters)})", DAEMON,
                                           f"changed the parameters to ({', '.join(found)}) of")
    assert "capture_signals" in called_in(uvicorn.Server.serve), broken(
        "uvicorn", "Server.serve entering self.capture_signals()", DAEMON, "no longer has")
    # The daemon sets the drain time on the config when it stops: uvicorn must read it at shutdown.
    assert "timeout_graceful_shutdown" in inspect.getsource(uvicorn.Server.shutdown), broken(
        "uvicorn", "Server.shutdown reading config.timeout_graceful_shutdown", DAEMON, "no longer has")


async def test_the_embedded_server_leaves_the_signal_handlers_alone():
    from aiosd.daemon import EmbeddedServer

    async def app(scope, receive, send):
        return None

    def ours(signum, frame):
        return None

    before = {sig: signal.signal(sig, ours) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server = EmbeddedServer(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_config=None))
        serving = asyncio.create_task(server.serve())
        listening = asyncio.create_task(server.listening.wait())
        await asyncio.wait({serving, listening}, return_when=asyncio.FIRST_COMPLETED)
        assert server.listening.is_set()
        during = {sig: signal.getsignal(sig) for sig in before}
        server.should_exit = True
        await serving
        after = {sig: signal.getsignal(sig) for sig in before}
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    assert during == after == {signal.SIGINT: ours, signal.SIGTERM: ours}, broken(
        "uvicorn", "Server.serve installing signal handlers only through capture_signals", DAEMON, "no longer has")


# --- httptools: how a callback stops the parser ------------------------------------------------


def test_httptools_turns_an_exception_in_a_callback_into_a_parser_error():
    # GuardedHttpProtocol.on_header raises to stop at server.max_headers; data_received answers 431.
    class Callbacks:
        def on_header(self, name, value):
            raise RuntimeError("too many")

    parser = httptools.HttpRequestParser(Callbacks())
    with pytest.raises(httptools.HttpParserError):
        parser.feed_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")


def test_httptools_reports_each_chunk_complete():
    class Callbacks:
        chunks = 0

        def on_chunk_complete(self):
            Callbacks.chunks += 1

    parser = httptools.HttpRequestParser(Callbacks())
    parser.feed_data(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert Callbacks.chunks == 3, (f"httptools {version('httptools')}: HttpRequestParser no longer calls "
                                   f"on_chunk_complete per chunk ({CONNECTIONS} counts chunk framing with it)")


# --- uvicorn: the start-up the embedded server runs without sockets ------------------------------


async def test_uvicorn_starts_without_sockets_and_shuts_down_what_is_in_its_servers():
    # EmbeddedServer runs uvicorn's startup with no socket, makes the protocols as uvicorn would
    # (config.http_protocol_class with its server_state and lifespan.state) and puts aiosd's acceptors
    # in self.servers, which uvicorn's shutdown closes and waits for.
    async def app(scope, receive, send):
        return None

    config = uvicorn.Config(app, lifespan="off", log_config=None)
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[])
    assert server.started and server.servers == [], broken(
        "uvicorn", "Server.startup(sockets=[]) starting with no server in self.servers", DAEMON, "changed")
    assert isinstance(server.server_state, ServerState) and hasattr(server.lifespan, "state"), broken(
        "uvicorn", "Server.server_state and Server.lifespan.state", DAEMON)
    assert isinstance(config.backlog, int), broken("uvicorn", "Config.backlog", DAEMON)

    class Acceptor:
        closed = waited = False

        def close(self):
            Acceptor.closed = True

        async def wait_closed(self):
            Acceptor.waited = True

    server.servers = [Acceptor()]  # type: ignore[list-item]
    await server.shutdown()
    assert Acceptor.closed, broken("uvicorn", "Server.shutdown closing self.servers", DAEMON, "no longer has")
