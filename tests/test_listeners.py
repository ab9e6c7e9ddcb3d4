"""Named listeners (issue 12) on one broker process: Kafka's `listeners`, `advertised.listeners`,
`listener.security.protocol.map`, `inter.broker.listener.name`, Sluice's
`forwarding.listener.names`, `${env:NAME}` values and repeated `--config`.

Configuration mistakes stop the broker at start with a non-zero exit and a message naming what is
wrong; a good configuration binds every listener (logged as "listening" lines) and Metadata
answers with the addresses of the listener the request came in on.

The broker is started directly (not through conftest's Broker, whose `--listener` flag is the
single-listener shortcut and would override `listeners`).
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import time

import pytest

from cluster import metadata_request
from conftest import BROKER_BIN, READY_RE, _set_pdeathsig

START_TIMEOUT = 60.0
EXIT_TIMEOUT = 30.0
TWO = "INTERNAL://127.0.0.1:0,LOCAL://127.0.0.1:0"
MAP = "INTERNAL:PLAINTEXT,LOCAL:PLAINTEXT"


def base_cmd(tmp_path, name="b") -> list[str]:
    assert BROKER_BIN.exists(), f"broker binary not found at {BROKER_BIN}"
    data = tmp_path / f"{name}-data"
    data.mkdir(parents=True, exist_ok=True)
    return [str(BROKER_BIN), "--data-dir", str(data), "--http-listener", "127.0.0.1:0", "--node-id", "0"]


def with_sets(cmd: list[str], settings: dict) -> list[str]:
    cmd = list(cmd)
    for k, v in settings.items():
        cmd += ["--set", f"{k}={v}"]
    return cmd


def env_without_sluice(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env.setdefault("NO_COLOR", "1")
    env.update(extra or {})
    return env


def expect_startup_error(cmd: list[str], must: list[str], any_of: list[str], env: dict | None = None):
    """Runs the broker; it must exit non-zero within EXIT_TIMEOUT without a panic, its stderr naming
    every string of `must` and at least one of `any_of` (case-insensitive)."""
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=EXIT_TIMEOUT, env=env_without_sluice(env),
                           stdin=subprocess.DEVNULL, preexec_fn=_set_pdeathsig)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace")
        raise AssertionError(f"the broker kept running with a bad configuration ({' '.join(cmd)}); "
                             f"stdout: {out[-500:]}") from None
    err = p.stderr.decode(errors="replace")
    out = p.stdout.decode(errors="replace")
    assert p.returncode != 0, f"exit code 0 with a bad configuration; stdout {out[-500:]!r} stderr {err[-2000:]!r}"
    assert not READY_RE.search(out), f"printed a ready line with a bad configuration: {out!r}"
    assert "panicked at" not in err, f"panicked instead of a configuration error:\n{err[-3000:]}"
    missing = [m for m in must if m not in err]
    assert not missing, f"the error does not name {missing}:\n{err[-2000:]}"
    assert any(a.lower() in err.lower() for a in any_of), f"the error names none of {any_of}:\n{err[-2000:]}"
    return err


# ---------------------------------------------------------------------------------------------
# Configuration errors
# ---------------------------------------------------------------------------------------------


CONFIG_ERRORS = {
    "unknown-protocol-in-map": (
        {"listeners": TWO, "listener.security.protocol.map": "INTERNAL:PLAINTEXT,LOCAL:BOGUS",
         "inter.broker.listener.name": "INTERNAL"},
        ["BOGUS"], ["listener.security.protocol.map", "protocol"]),
    "protocol-not-served": (
        {"listeners": TWO, "listener.security.protocol.map": "INTERNAL:PLAINTEXT,LOCAL:SSL",
         "inter.broker.listener.name": "INTERNAL"},
        ["SSL"], ["listener.security.protocol.map", "protocol", "PLAINTEXT"]),
    "listener-missing-from-map": (
        {"listeners": TWO, "listener.security.protocol.map": "INTERNAL:PLAINTEXT",
         "inter.broker.listener.name": "INTERNAL"},
        ["LOCAL"], ["listener.security.protocol.map", "protocol"]),
    "advertised-names-unknown-listener": (
        {"listeners": TWO, "listener.security.protocol.map": MAP, "inter.broker.listener.name": "INTERNAL",
         "advertised.listeners": "OTHER://localhost:9092"},
        ["OTHER"], ["advertised.listeners", "advertised"]),
    "inter-broker-listener-unknown": (
        {"listeners": TWO, "listener.security.protocol.map": MAP, "inter.broker.listener.name": "NOPE"},
        ["NOPE"], ["inter.broker.listener.name", "inter-broker", "inter broker"]),
    "forwarding-listener-unknown": (
        {"listeners": TWO, "listener.security.protocol.map": MAP, "inter.broker.listener.name": "INTERNAL",
         "forwarding.listener.names": "ELSEWHERE"},
        ["ELSEWHERE"], ["forwarding.listener.names", "forwarding"]),
    "forwarding-listener-is-the-inter-broker-one": (
        # Forwarded requests go over the inter-broker listener: it cannot forward itself.
        {"listeners": TWO, "listener.security.protocol.map": MAP, "inter.broker.listener.name": "INTERNAL",
         "forwarding.listener.names": "INTERNAL"},
        ["INTERNAL"], ["forwarding", "inter.broker.listener.name", "inter-broker"]),
    "duplicate-listener-name": (
        {"listeners": "INTERNAL://127.0.0.1:0,INTERNAL://127.0.0.1:0", "listener.security.protocol.map": MAP},
        ["INTERNAL"], ["duplicate", "twice", "more than once", "listeners"]),
    "two-listeners-no-inter-broker-name": (
        # Two listeners, neither named PLAINTEXT, no inter.broker.listener.name: no default.
        {"listeners": TWO, "listener.security.protocol.map": MAP},
        [], ["inter.broker.listener.name", "inter-broker", "inter broker"]),
    "malformed-listener": (
        {"listeners": "INTERNAL//127.0.0.1:0"},
        ["INTERNAL//127.0.0.1"], ["listeners", "listener"]),
}


@pytest.mark.parametrize("case", list(CONFIG_ERRORS))
def test_listener_config_error_stops_the_broker(tmp_path, case):
    settings, must, any_of = CONFIG_ERRORS[case]
    expect_startup_error(with_sets(base_cmd(tmp_path), settings), must, any_of)


def test_unset_env_reference_is_an_error(tmp_path):
    cmd = with_sets(base_cmd(tmp_path), {"listeners": "${env:SLUICE_TEST_SURELY_UNSET_VAR}"})
    expect_startup_error(cmd, ["SLUICE_TEST_SURELY_UNSET_VAR"], ["env", "unset", "not set"])


# ---------------------------------------------------------------------------------------------
# Good configurations
# ---------------------------------------------------------------------------------------------


class Proc:
    """A broker started directly; `listening` maps listener name -> bound port (from stderr)."""

    def __init__(self, cmd: list[str], stderr_path, env: dict | None = None):
        self.cmd = cmd
        self.stderr_path = stderr_path
        with open(stderr_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                                         env=env_without_sluice(env), preexec_fn=_set_pdeathsig)
        self.ready = self._wait_ready()

    def _wait_ready(self) -> str:
        fd = self.proc.stdout.fileno()
        os.set_blocking(fd, False)
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        buf = b""
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while time.monotonic() < deadline:
                for _k, _e in sel.select(timeout=0.5):
                    try:
                        chunk = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        rc = self.proc.wait(10)
                        raise AssertionError(f"broker exited {rc} before it was ready:\n{self.stderr()[-3000:]}")
                    buf += chunk
                    for line in buf.decode(errors="replace").splitlines():
                        if READY_RE.match(line):
                            return line
            raise AssertionError(f"no ready line in {START_TIMEOUT}s:\n{self.stderr()[-3000:]}")
        finally:
            sel.close()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def listening(self) -> dict[str, int]:
        """{listener name: port} from the "listening" log lines (name and address on one line)."""
        out = {}
        for line in self.stderr().splitlines():
            if "listening" not in line.lower():
                continue
            m = re.search(r"127\.0\.0\.1:(\d+)", line)
            names = re.findall(r"\b(INTERNAL|LOCAL|PLAINTEXT|EXTERNAL)\b", line)
            if m and names:
                out[names[0]] = int(m.group(1))
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("broker did not stop within 30 s of SIGTERM")
            assert rc == 0, f"broker exited {rc} after SIGTERM:\n{self.stderr()[-2000:]}"
        assert "panicked at" not in self.stderr(), self.stderr()[-3000:]


@pytest.fixture
def procs():
    started: list[Proc] = []
    yield started
    for p in started:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()


def brokers_seen(bootstrap: str) -> dict[int, tuple[str, int]]:
    md = metadata_request(bootstrap)
    return {i: (h, p) for i, (h, p, _r) in md.brokers.items()}


def test_two_listeners_each_answers_with_its_own_address(tmp_path, procs):
    cmd = with_sets(base_cmd(tmp_path), {
        "listeners": TWO, "listener.security.protocol.map": MAP, "inter.broker.listener.name": "INTERNAL",
        "advertised.listeners": "LOCAL://localhost:19092", "forwarding.listener.names": "LOCAL"})
    b = Proc(cmd, tmp_path / "b.stderr")
    procs.append(b)
    ports = b.listening()
    assert set(ports) == {"INTERNAL", "LOCAL"}, f"'listening' lines: {ports}\n{b.stderr()[-2000:]}"
    assert ports["INTERNAL"] != ports["LOCAL"] and 0 not in ports.values()
    # INTERNAL is not in advertised.listeners: it advertises its bound address.
    assert brokers_seen(f"127.0.0.1:{ports['INTERNAL']}") == {0: ("127.0.0.1", ports["INTERNAL"])}
    assert brokers_seen(f"127.0.0.1:{ports['LOCAL']}") == {0: ("localhost", 19092)}
    b.stop()


def test_single_listener_forms_still_work(tmp_path, procs):
    """`listeners=HOST:PORT` and `PLAINTEXT://HOST:PORT` mean one listener named PLAINTEXT; an old
    single `advertised.listeners=HOST:PORT` is that listener's."""
    for i, (listeners, advertised) in enumerate([("127.0.0.1:0", "localhost:19093"),
                                                 ("PLAINTEXT://127.0.0.1:0", "PLAINTEXT://localhost:19094")]):
        cmd = with_sets(base_cmd(tmp_path, f"b{i}"), {"listeners": listeners, "advertised.listeners": advertised})
        b = Proc(cmd, tmp_path / f"b{i}.stderr")
        procs.append(b)
        m = READY_RE.match(b.ready)
        port = int(m.group(2))
        want_port = int(advertised.rsplit(":", 1)[1])
        assert brokers_seen(f"127.0.0.1:{port}") == {0: ("localhost", want_port)}, (listeners, advertised)
        b.stop()


def test_env_references_and_repeated_config_files(tmp_path, procs):
    """`${env:NAME}` inside a value is the variable's value; of two --config files the later wins
    (and --set wins over both)."""
    first = tmp_path / "first.properties"
    first.write_text("listeners=${env:SLUICE_TEST_LISTENERS}\n"
                     "listener.security.protocol.map=INTERNAL:PLAINTEXT,LOCAL:PLAINTEXT\n"
                     "inter.broker.listener.name=INTERNAL\n"
                     "advertised.listeners=LOCAL://localhost:1111\n"
                     "num.partitions=7\n")
    second = tmp_path / "second.properties"
    second.write_text("advertised.listeners=LOCAL://${env:SLUICE_TEST_ADV_HOST}:2222\n"
                      "num.partitions=5\n")
    cmd = base_cmd(tmp_path) + ["--config", str(first), "--config", str(second), "--set", "num.partitions=4"]
    b = Proc(cmd, tmp_path / "b.stderr", env={"SLUICE_TEST_LISTENERS": TWO, "SLUICE_TEST_ADV_HOST": "localhost"})
    procs.append(b)
    ports = b.listening()
    assert set(ports) == {"INTERNAL", "LOCAL"}, f"'listening' lines: {ports}\n{b.stderr()[-2000:]}"
    assert brokers_seen(f"127.0.0.1:{ports['LOCAL']}") == {0: ("localhost", 2222)}
    import kafka_wire as wire

    with wire.Conn.to(f"127.0.0.1:{ports['INTERNAL']}") as c:
        md = c.metadata(["env-and-files"], allow_auto_create=True)
        code, parts = md["env-and-files"]
        assert code == 0 and sorted(parts) == [0, 1, 2, 3], md
    b.stop()
