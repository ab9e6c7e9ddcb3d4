"""Harness for multi-broker tests: N sluice-broker processes on loopback forming one cluster.

Loaded as a pytest plugin by conftest.py (`pytest_plugins`), so its fixtures and the `cluster`
marker are available to every test module; bench/failover.py imports it as a plain module.

Fixtures:
  make_cluster(n, extra_config=None, start=True, **kw) -> Cluster   (any number of clusters per test)
  cluster3                                                          a started 3-broker cluster

Cluster(n, workdir, extra_config, bootstrap_count=None):
  processes: start_all(), start(i), start_many(ids), kill(i) (SIGKILL), stop(i) (SIGTERM, waits,
    asserts exit 0), terminate(i) + wait_exit(i) (SIGTERM without waiting), pause(i) / resume(i)
    (SIGSTOP / SIGCONT), restart(i, clean=False), teardown()
  waiting: wait_ready(i, timeout) (/readyz 200), wait_all_ready(), wait_until(cond, timeout),
    wait_topic_healthy(topic, partitions, rf), wait_leader_change(topic, p, old), wait_controller()
  metadata (raw Metadata v7/v8 to a chosen broker): metadata(via), partition(topic, p) (freshest
    view), leader_of(topic, p), leaders(topic, n), controller(), describe() (a state dump)
  clients: bootstrap_servers(ids=None), admin() (confluent), kafka_python_admin(),
    create_topic(...), producer(...), tail_consumer(...)
Two listeners per broker (issue 12), with Cluster(..., forwarding=True): an internal one named INTERNAL
(inter-broker, `ClusterBroker.port` / `bootstrap`, what every helper above uses) and a forwarding
one named LOCAL (`ClusterBroker.local_port` / `local_bootstrap`) whose advertised address is the
same on every broker: `localhost:<relay port>` of a tests/relay.py Relay (the cluster's `relay`,
created first so its port is known, pointed at broker `relay_to`'s LOCAL port, closed at teardown;
`relay_bootstrap` is what a client behind `kubectl port-forward` would use). With tunnel="none"
there is no relay and every broker advertises broker `relay_to`'s LOCAL port itself (as
`localhost:<port>`: an ideal, zero-cost tunnel; bench/forwarding.py measures the forwarding hop
alone that way). Brokers may spell the advertised host differently (its case, issue 12).
Every broker is node i with Kafka port and HTTP port fixed for the cluster's lifetime (peers know
each other's HTTP ports: controller.quorum.bootstrap.servers lists the first min(n, 3) brokers,
the ones that form the cluster; any others join through them); its stderr goes to
<workdir>/broker<i>.log and its stdout to broker<i>.stdout.log. When a test fails the tail of each
broker's log is attached to the report (conftest's report hook); teardown always SIGKILLs every
process, then fails the test if a broker died on its own or printed a Rust panic.

Workload helpers: ContinuousProducer (an idempotent acks=all producer thread that records every
acknowledged (partition, offset, value)), TailConsumer (a consumer thread that follows the
partitions during the test and records offsets going backwards), read_partitions() and
check_acknowledged() (lost / duplicated / out of order / offset mismatches, printed as counts).
"""

from __future__ import annotations

import base64
import collections
import os
import random
import selectors
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import kafka_wire as wire
from conftest import BROKER_BIN, READY_RE, _set_pdeathsig, rdkafka_conf
from conftest import wait_until as _wait_until

try:  # only the fixtures need pytest; bench/failover.py runs without it
    import pytest
except ImportError:  # pragma: no cover
    pytest = None

START_TIMEOUT = float(os.environ.get("SLUICE_START_TIMEOUT", "60"))
STOP_TIMEOUT = float(os.environ.get("SLUICE_STOP_TIMEOUT", "45"))

# Kafka error codes the cluster tests look at.
REQUEST_TIMED_OUT = 7
NOT_ENOUGH_REPLICAS = 19
NOT_ENOUGH_REPLICAS_AFTER_APPEND = 20
INVALID_REPLICATION_FACTOR = 38


def new_cluster_id() -> str:
    """A Kafka-style cluster id: 16 random bytes, base64url without padding (22 characters)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


# ---------------------------------------------------------------------------------------------
# Ports
# ---------------------------------------------------------------------------------------------


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def pick_free_ports(n: int) -> list[int]:
    """n distinct ports that were free on 127.0.0.1 a moment ago (the race is handled by retrying
    a start that fails to bind). They are picked below the kernel's ephemeral range when there
    is room: a broker keeps its ports across restarts, and a port from the ephemeral range could
    meanwhile become the local end of some client connection, so the restart could not bind it."""
    lo, _hi = _ephemeral_range()
    socks, ports = [], []
    try:
        tries = 0
        while len(ports) < n:
            tries += 1
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            port = random.randrange(10000, lo) if lo - 10000 >= 1000 and tries < 500 else 0
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            socks.append(s)  # held open until all are picked: no duplicates
            ports.append(s.getsockname()[1])
        return ports
    finally:
        for s in socks:
            s.close()


# ---------------------------------------------------------------------------------------------
# Metadata on the raw wire (any broker can be asked; client libraries pick one themselves)
# ---------------------------------------------------------------------------------------------


@dataclass
class PartitionMeta:
    error_code: int
    partition: int
    leader: int
    leader_epoch: int
    replicas: list[int]
    isr: list[int]
    offline: list[int]


@dataclass
class TopicMeta:
    error_code: int
    name: str
    partitions: dict[int, PartitionMeta]


@dataclass
class ClusterMeta:
    via: int
    brokers: dict[int, tuple[str, int, str | None]]  # node id -> (host, port, rack)
    cluster_id: str | None
    controller_id: int
    topics: dict[str, TopicMeta]


def metadata_request(bootstrap: str, topics: list[str] | None = None, via: int = -1,
                     timeout: float = 5.0) -> ClusterMeta:
    """Metadata v7 or v8 (non-flexible, with leader epochs) to one broker, fully parsed."""
    with wire.Conn.to(bootstrap, timeout=timeout) as c:
        version = c.pick_version(wire.METADATA, 7, 8)
        body = wire.i32(-1) if topics is None else wire.array([wire.string(t) for t in topics])
        body += wire.i8(0)  # allow_auto_topic_creation: never, listing must not create
        if version >= 8:
            body += wire.i8(0) + wire.i8(0)
        r = c.request(wire.METADATA, version, body)
        r.i32()  # throttle
        brokers = {}
        for _ in range(r.i32()):
            node, host, port, rack = r.i32(), r.string(), r.i32(), r.string()
            brokers[node] = (host, port, rack)
        cluster_id = r.string()
        controller_id = r.i32()
        out = {}
        for _ in range(r.i32()):
            code, name = r.i16(), r.string()
            r.i8()  # is_internal
            parts = {}
            for _ in range(r.i32()):
                p = PartitionMeta(r.i16(), r.i32(), r.i32(), r.i32(),
                                  r.array(lambda x: x.i32()), r.array(lambda x: x.i32()),
                                  r.array(lambda x: x.i32()))
                parts[p.partition] = p
            if version >= 8:
                r.i32()  # topic authorized operations
            out[name] = TopicMeta(code, name, parts)
        return ClusterMeta(via, brokers, cluster_id, controller_id, out)


# ---------------------------------------------------------------------------------------------
# Brokers
# ---------------------------------------------------------------------------------------------


class ClusterStartError(AssertionError):
    pass


class _BindFailed(Exception):
    pass


class ClusterBroker:
    """One broker process of a Cluster. `name` and `stderr_tail()` make it show up in conftest's
    failure report hook."""

    def __init__(self, cluster: "Cluster", node_id: int):
        self.cluster = cluster
        self.node_id = node_id
        self.name = f"broker{node_id}"
        self.data_dir = cluster.workdir / f"{self.name}-data"
        self.log_path = cluster.workdir / f"{self.name}.log"
        self.stdout_path = cluster.workdir / f"{self.name}.stdout.log"
        self.port = 0
        self.http_port = 0
        self.local_port = 0  # the LOCAL (forwarding) listener, when the cluster has one
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.expect_running = False
        self.paused = False
        self.ready_line: str | None = None
        self.exit_codes: list[int] = []
        self._log_offset = 0  # where this start's stderr begins

    @property
    def bootstrap(self) -> str:
        """The Kafka listener every harness helper uses (INTERNAL when there are two)."""
        return f"127.0.0.1:{self.port}"

    @property
    def local_bootstrap(self) -> str:
        """This broker's forwarding listener (LOCAL), bound address (not the advertised one)."""
        assert self.local_port, f"{self.name} has no forwarding listener (Cluster(..., forwarding=True))"
        return f"127.0.0.1:{self.local_port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def live(self) -> bool:
        """Running and not stopped with SIGSTOP: can answer requests."""
        return self.alive() and not self.paused

    def command(self) -> list[str]:
        c = self.cluster
        cmd = [str(BROKER_BIN),
               "--node-id", str(self.node_id),
               "--data-dir", str(self.data_dir)]
        if c.forwarding:
            # No --listener: that flag is the single-listener shortcut and would win over --set.
            cmd += ["--set", f"listeners=INTERNAL://127.0.0.1:{self.port},LOCAL://127.0.0.1:{self.local_port}",
                    "--set", f"advertised.listeners=LOCAL://{c.local_advertised}",
                    "--set", "listener.security.protocol.map=INTERNAL:PLAINTEXT,LOCAL:PLAINTEXT",
                    "--set", "inter.broker.listener.name=INTERNAL",
                    "--set", "forwarding.listener.names=LOCAL"]
        else:
            cmd += ["--listener", f"127.0.0.1:{self.port}"]
        cmd += ["--http-listener", f"127.0.0.1:{self.http_port}",
                "--set", f"cluster.id={c.cluster_id}",
               "--set", "controller.quorum.bootstrap.servers=" + ",".join(
                   f"{b.node_id}@127.0.0.1:{b.http_port}" for b in c.brokers[:c.bootstrap_count])]
        for k, v in c.extra_config.items():
            cmd += ["--set", f"{k}={v}"]
        return cmd

    def spawn(self):
        """Starts the process (does not wait for it to be ready). Must run on a thread that lives
        as long as the broker (the test's main thread): PR_SET_PDEATHSIG fires when the thread
        that forked the child exits."""
        assert not self.alive(), f"{self.name} is already running"
        if not BROKER_BIN.exists():
            raise ClusterStartError(
                f"broker binary not found at {BROKER_BIN} "
                "(run `cargo build --release -p sluice-broker` or set SLUICE_BROKER_BIN)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        self.paused = False
        self.ready_line = None
        cmd = self.command()
        with open(self.log_path, "ab") as f:
            f.write(f"\n===== {time.strftime('%H:%M:%S')} start #{self.starts}: {' '.join(cmd)}\n".encode())
            self._log_offset = f.tell()
        errf = open(self.log_path, "ab")
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        env.setdefault("NO_COLOR", "1")
        try:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf, stdin=subprocess.DEVNULL,
                                         env=env, preexec_fn=_set_pdeathsig)
        finally:
            errf.close()
        self.expect_running = True
        os.set_blocking(self.proc.stdout.fileno(), False)

    def log_since_start(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def bind_failed(self) -> bool:
        text = self.log_since_start()
        return "Address already in use" in text or "os error 98" in text

    def _stdout_log(self, text: str):
        with open(self.stdout_path, "a") as f:
            f.write(text)

    def _drain_stdout(self):
        """After the ready line: keep reading stdout into the log so the pipe never fills."""
        proc = self.proc
        fd = proc.stdout.fileno()
        os.set_blocking(fd, True)

        def run():
            try:
                while True:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        break
                    self._stdout_log(chunk.decode(errors="replace"))
            except OSError:
                pass
            proc.stdout.close()

        threading.Thread(target=run, daemon=True, name=f"{self.name}-stdout").start()

    def signal(self, sig):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def reap(self, timeout: float) -> int:
        rc = self.proc.wait(timeout=timeout)
        self.exit_codes.append(rc)
        self.paused = False
        return rc

    # --- diagnostics ---------------------------------------------------------------------------

    def stderr_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stderr_tail(self, lines: int = 60) -> str:
        tail = self.stderr_text().splitlines()[-lines:]
        state = "running" if self.alive() else f"exited {self.proc.returncode}" if self.proc else "never started"
        local = f", local {self.local_port}" if self.local_port else ""
        return (f"--- {self.name} (node {self.node_id}, kafka {self.port}{local}, http {self.http_port}, {state}"
                f"{', paused' if self.paused else ''}) log {self.log_path}, last {len(tail)} lines ---\n"
                + "\n".join(tail))

    def panics(self) -> list[str]:
        return [l for l in self.stderr_text().splitlines() if "panicked at" in l]

    def http_get(self, path: str, timeout: float = 2.0) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")


# ---------------------------------------------------------------------------------------------
# Cluster
# ---------------------------------------------------------------------------------------------


class Cluster:
    def __init__(self, n: int, tmp_path, extra_config: dict | None = None, name: str = "cluster",
                 bootstrap_count: int | None = None, forwarding: bool = False, relay_to: int = 0,
                 tunnel: str = "relay"):
        """`bootstrap_count`: how many brokers (the first ones) form the cluster and are listed in
        everybody's controller.quorum.bootstrap.servers; the others join through them. Default:
        up to 3 (the metadata quorum's default voter count).

        `forwarding`: two listeners per broker, INTERNAL (inter-broker; `port`) and the forwarding
        LOCAL (`local_port`), every broker advertising the same LOCAL address: the relay's
        `localhost:<port>` (tunnel="relay", the relay forwarding to broker `relay_to`), or broker
        `relay_to`'s own LOCAL address (tunnel="none")."""
        assert n >= 1
        assert tunnel in ("relay", "none"), tunnel
        self.forwarding = forwarding
        self.relay_to = relay_to
        self.relay = None
        if forwarding and tunnel == "relay":
            from relay import Relay

            # Bound now, so the port every broker advertises is known before any starts; pointed
            # at a broker in _assign_ports.
            self.relay = Relay("127.0.0.1", 1)
        self.n = n
        self.bootstrap_count = min(n, 3) if bootstrap_count is None else bootstrap_count
        self.workdir = Path(tmp_path) / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cluster_id = new_cluster_id()
        self.extra_config = {k: str(v) for k, v in (extra_config or {}).items()}
        self.brokers = [ClusterBroker(self, i) for i in range(n)]
        self.formed = False  # True once any broker printed its ready line with these ports
        self._admin = None
        self._kp_admin = None
        self._workloads: list = []
        self.unexpected_exits: list[str] = []
        self._assign_ports()

    def __getitem__(self, i: int) -> ClusterBroker:
        return self.brokers[i]

    def _assign_ports(self):
        per = 3 if self.forwarding else 2
        ports = pick_free_ports(per * self.n)
        for b in self.brokers:
            b.port, b.http_port = ports[per * b.node_id], ports[per * b.node_id + 1]
            if self.forwarding:
                b.local_port = ports[per * b.node_id + 2]
        if self.relay is not None:
            self.relay.retarget("127.0.0.1", self.brokers[self.relay_to].local_port)
            if not self.relay._accept.is_alive():
                self.relay.start()

    @property
    def local_advertised(self) -> str:
        """The LOCAL listener's address every broker advertises."""
        assert self.forwarding, "the cluster has no forwarding listener"
        if self.relay is not None:
            return f"localhost:{self.relay.port}"
        # A host name, not 127.0.0.1: brokers spell it differently (its case) for librdkafka.
        return f"localhost:{self.brokers[self.relay_to].local_port}"

    @property
    def relay_bootstrap(self) -> str:
        """What a client behind the tunnel bootstraps from (the advertised LOCAL address)."""
        return self.local_advertised

    # --- lifecycle -----------------------------------------------------------------------------

    def start_all(self, timeout: float = START_TIMEOUT):
        """Starts every broker that is not running, concurrently (a quorum needs a majority up
        before anyone can register), and waits for each one's ready line."""
        self.start_many([b.node_id for b in self.brokers if not b.alive()], timeout)

    def start(self, i: int, timeout: float = START_TIMEOUT):
        self.start_many([i], timeout)

    def start_many(self, ids: list[int], timeout: float = START_TIMEOUT):
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            attempt += 1
            for i in ids:
                self.brokers[i].spawn()
            try:
                self._await_ready(ids, deadline)
                self.formed = True
                return
            except _BindFailed as e:
                if time.monotonic() >= deadline or attempt >= 8:
                    raise ClusterStartError(f"cannot bind the brokers' ports after {attempt} attempts: {e}\n"
                                            + self.logs_tail(40, ids)) from None
                for i in ids:  # stop the ones that did start; they are retried together
                    b = self.brokers[i]
                    if b.alive():
                        b.signal(signal.SIGKILL)
                        b.reap(STOP_TIMEOUT)
                    b.expect_running = False
                if not self.formed:
                    # Nothing was ever formed with these ports: pick new ones for everybody (peers
                    # learn each other's HTTP ports from the command line) and start from scratch.
                    for b in self.brokers:
                        assert not b.alive()
                        shutil.rmtree(b.data_dir, ignore_errors=True)  # may name the old ports
                    self._assign_ports()
                else:
                    # Ports are fixed once the cluster exists: wait for the port to come free.
                    time.sleep(0.2)  # back-off between bind attempts, not synchronisation

    def _await_ready(self, ids: list[int], deadline: float):
        pending = {self.brokers[i].proc.stdout.fileno(): self.brokers[i] for i in ids}
        bufs = {fd: b"" for fd in pending}
        sel = selectors.DefaultSelector()
        for fd in pending:
            sel.register(fd, selectors.EVENT_READ)
        try:
            while pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    names = ", ".join(b.name for b in pending.values())
                    for b in pending.values():
                        b.expect_running = False
                        b.signal(signal.SIGKILL)
                        b.reap(STOP_TIMEOUT)
                    raise ClusterStartError(f"no ready line from {names} in time\n"
                                            + self.logs_tail(40, [b.node_id for b in pending.values()]))
                for key, _ev in sel.select(timeout=min(left, 0.5)):
                    fd = key.fd
                    b = pending[fd]
                    try:
                        chunk = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    if not chunk:  # EOF: the broker exited before it was ready
                        sel.unregister(fd)
                        del pending[fd]
                        b.proc.stdout.close()
                        rc = b.reap(STOP_TIMEOUT)
                        b.expect_running = False
                        if bufs[fd]:
                            b._stdout_log(bufs[fd].decode(errors="replace"))
                        if b.bind_failed():
                            raise _BindFailed(f"{b.name} (kafka {b.port}, http {b.http_port})")
                        raise ClusterStartError(f"{b.name} exited with code {rc} before it was ready\n"
                                                + b.stderr_tail(80))
                    bufs[fd] += chunk
                    while b"\n" in bufs[fd]:
                        raw, bufs[fd] = bufs[fd].split(b"\n", 1)
                        line = raw.decode(errors="replace")
                        b._stdout_log(line + "\n")
                        m = READY_RE.match(line)
                        if m:
                            got_port, got_http = int(m.group(2)), int(m.group(4))
                            # With two listeners the ready line names one of them.
                            kafka_ports = {b.port} | ({b.local_port} if self.forwarding else set())
                            assert got_port in kafka_ports and got_http == b.http_port, (
                                f"{b.name} says it listens on {got_port}/{got_http}, "
                                f"asked for {sorted(kafka_ports)}/{b.http_port}")
                            b.ready_line = line
                            sel.unregister(fd)
                            del pending[fd]
                            if bufs[fd]:
                                b._stdout_log(bufs[fd].decode(errors="replace"))
                            b._drain_stdout()
                            break
        finally:
            sel.close()

    def kill(self, i: int):
        """SIGKILL (also works on a SIGSTOPped broker) and reap."""
        b = self.brokers[i]
        assert b.proc is not None, f"{b.name} never started"
        if b.expect_running and not b.alive():
            self.unexpected_exits.append(f"{b.name} had exited on its own (code {b.proc.returncode}) "
                                         "before the test killed it")
        b.expect_running = False
        b.signal(signal.SIGKILL)
        b.reap(STOP_TIMEOUT)

    def terminate(self, i: int):
        """SIGTERM without waiting (controlled shutdown); see wait_exit."""
        b = self.brokers[i]
        assert b.alive(), f"{b.name} is not running"
        assert not b.paused, f"{b.name} is paused: SIGTERM would not be handled"
        b.expect_running = False
        b.signal(signal.SIGTERM)

    def wait_exit(self, i: int, timeout: float = STOP_TIMEOUT) -> int:
        b = self.brokers[i]
        try:
            return b.reap(timeout)
        except subprocess.TimeoutExpired:
            b.signal(signal.SIGKILL)
            b.reap(STOP_TIMEOUT)
            raise AssertionError(f"{b.name} did not exit within {timeout}s of SIGTERM\n" + b.stderr_tail(80)) from None

    def stop(self, i: int, timeout: float = STOP_TIMEOUT, check: bool = True) -> int:
        """SIGTERM and wait; with check, asserts a clean exit (code 0)."""
        self.terminate(i)
        rc = self.wait_exit(i, timeout)
        if check:
            assert rc == 0, f"broker{i} exited with {rc} after SIGTERM (want 0)\n" + self.brokers[i].stderr_tail(80)
        return rc

    def pause(self, i: int):
        """SIGSTOP; returns once the kernel reports the process stopped."""
        b = self.brokers[i]
        assert b.live(), f"{b.name} is not running (or already paused)"
        b.paused = True
        b.signal(signal.SIGSTOP)
        self.wait_until(lambda: _proc_state(b.proc.pid) in ("T", "t"), 10, msg=f"{b.name} stopped")

    def resume(self, i: int):
        b = self.brokers[i]
        assert b.paused, f"{b.name} is not paused"
        b.signal(signal.SIGCONT)
        b.paused = False

    def restart(self, i: int, clean: bool = False, timeout: float = START_TIMEOUT):
        """Stops (SIGKILL, or SIGTERM when clean) then starts on the same data dir and ports."""
        if self.brokers[i].alive():
            self.stop(i) if clean else self.kill(i)
        self.start(i, timeout)

    def teardown(self) -> list[str]:
        """Stops the tracked producer/consumer threads, SIGKILLs every process; returns problems
        (unexpected exits, panics)."""
        problems = list(self.unexpected_exits)
        for w in self._workloads:
            try:
                w.close()
            except Exception as e:  # noqa: BLE001 - teardown goes on
                problems.append(f"closing {w!r}: {e!r}")
        self._workloads.clear()
        for b in self.brokers:
            if b.proc is None:
                continue
            if b.expect_running and not b.alive():
                problems.append(f"{b.name} exited on its own with code {b.proc.returncode}")
            if b.alive():
                b.expect_running = False
                b.signal(signal.SIGKILL)
                try:
                    b.reap(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    problems.append(f"{b.name} (pid {b.proc.pid}) survived SIGKILL")
            panics = b.panics()
            if panics:
                problems.append(f"{b.name} panicked: {panics[:3]}")
        if self._kp_admin is not None:
            try:
                self._kp_admin.close()
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass
            self._kp_admin = None
        self._admin = None
        if self.relay is not None:
            self.relay.close()
        return problems

    # --- addresses and readiness ---------------------------------------------------------------

    def bootstrap_servers(self, ids=None) -> str:
        ids = range(self.n) if ids is None else ids
        return ",".join(self.brokers[i].bootstrap for i in ids)

    def live_ids(self) -> list[int]:
        return [b.node_id for b in self.brokers if b.live()]

    def wait_ready(self, i: int, timeout: float = 60.0):
        """Polls /readyz until 200; fails early if the broker died."""
        b = self.brokers[i]
        last = [None]

        def check():
            if not b.alive():
                raise AssertionError(f"{b.name} died while waiting for /readyz\n" + b.stderr_tail(80))
            assert not b.paused, f"{b.name} is paused"
            try:
                last[0] = b.http_get("/readyz")
            except OSError as e:
                last[0] = e
                return False
            return last[0][0] == 200

        try:
            _wait_until(check, timeout, interval=0.1, msg=f"{b.name} /readyz 200")
        except AssertionError as e:
            raise AssertionError(f"{e} (last answer {last[0]!r})\n" + self.describe() + "\n"
                                 + self.logs_tail(30)) from None

    def wait_all_ready(self, timeout: float = 60.0, ids=None):
        deadline = time.monotonic() + timeout
        for i in (range(self.n) if ids is None else ids):
            self.wait_ready(i, max(0.5, deadline - time.monotonic()))

    @staticmethod
    def wait_until(cond, timeout: float = 30.0, interval: float = 0.05, msg: str = "condition", detail=None):
        """conftest's wait_until; on timeout, `detail()` (if given) is added to the message to
        show the state that was waited on."""
        try:
            return _wait_until(cond, timeout, interval, msg)
        except AssertionError as e:
            if detail is None:
                raise
            try:
                extra = detail()
            except Exception as de:  # noqa: BLE001 - the original failure matters more
                extra = f"(no detail: {de!r})"
            raise AssertionError(f"{e}\n{extra}") from None

    def describe(self, topics: list[str] | None = None) -> str:
        """Each live broker's view: brokers, controller, and each partition's leader/epoch/replicas/ISR."""
        lines = []
        for i in self.live_ids():
            try:
                md = self.metadata(i, topics)
            except Exception as e:  # noqa: BLE001 - diagnostics only
                lines.append(f"  broker{i}: no metadata ({e!r})")
                continue
            lines.append(f"  broker{i}: brokers={sorted(md.brokers)} controller={md.controller_id} "
                         f"cluster={md.cluster_id}")
            for name, t in sorted(md.topics.items()):
                if topics is None and name.startswith("__"):
                    continue
                for p in t.partitions.values():
                    lines.append(f"    {name}-{p.partition}: error={p.error_code} leader={p.leader} "
                                 f"epoch={p.leader_epoch} replicas={p.replicas} isr={p.isr} offline={p.offline}")
                if t.error_code:
                    lines.append(f"    {name}: error {t.error_code}")
        down = [b.name + (" (paused)" if b.paused else "") for b in self.brokers if not b.live()]
        return "cluster state:\n" + "\n".join(lines) + (f"\n  not live: {down}" if down else "")

    def logs_tail(self, lines: int = 40, ids=None) -> str:
        ids = range(self.n) if ids is None else ids
        return "\n".join(self.brokers[i].stderr_tail(lines) for i in ids)

    # --- metadata --------------------------------------------------------------------------------

    def metadata(self, via: int, topics: list[str] | None = None, timeout: float = 5.0) -> ClusterMeta:
        return metadata_request(self.brokers[via].bootstrap, topics, via, timeout)

    def metadata_all(self, topics: list[str] | None = None, ids=None) -> dict[int, ClusterMeta]:
        """Metadata from each live broker (those that answer)."""
        out = {}
        for i in (self.live_ids() if ids is None else ids):
            try:
                out[i] = self.metadata(i, topics)
            except (OSError, wire.Closed, AssertionError, ValueError):
                continue
        return out

    def partition(self, topic: str, partition: int, ids=None) -> PartitionMeta | None:
        """The freshest view of a partition among the live brokers: the answer with the highest
        leader epoch (brokers apply the metadata log at slightly different times)."""
        best = None
        for md in self.metadata_all([topic], ids).values():
            t = md.topics.get(topic)
            if t is None or t.error_code != 0 or partition not in t.partitions:
                continue
            p = t.partitions[partition]
            if best is None or p.leader_epoch > best.leader_epoch:
                best = p
        return best

    def leader_of(self, topic: str, partition: int, ids=None) -> int:
        """The partition's leader (-1 if none or unknown) per the freshest live broker."""
        p = self.partition(topic, partition, ids)
        return -1 if p is None else p.leader

    def leaders(self, topic: str, partitions: int) -> dict[int, int]:
        return {p: self.leader_of(topic, p) for p in range(partitions)}

    def wait_leader_change(self, topic: str, partition: int, old: int, timeout: float = 30.0) -> int:
        """Until a live broker other than `old` leads the partition; returns its id."""
        box = {}

        def moved():
            leader = self.leader_of(topic, partition)
            box["last"] = leader
            return leader not in (-1, old)

        self.wait_until(moved, timeout, 0.05, msg=f"{topic}-{partition} led by a broker other than {old}",
                        detail=lambda: self.describe([topic]))
        return box["last"]

    def controller(self, ids=None) -> int:
        """The controller id all answering live brokers agree on, else -1."""
        got = {md.controller_id for md in self.metadata_all(None, ids).values()}
        return got.pop() if len(got) == 1 else -1

    def wait_controller(self, timeout: float = 30.0) -> int:
        """Until the live brokers agree on a controller; returns its id."""
        box = {}

        def agreed():
            box["id"] = self.controller()
            return box["id"] >= 0

        self.wait_until(agreed, timeout, 0.1, msg="the live brokers to agree on a controller", detail=self.describe)
        return box["id"]

    def wait_topic_healthy(self, topic: str, partitions: int, rf: int, timeout: float = 30.0, ids=None):
        """Until every live broker (or `ids`) reports the topic with all partitions led, rf replicas
        each and a full ISR."""
        def ok():
            want = self.live_ids() if ids is None else list(ids)
            mds = self.metadata_all([topic], want)
            if sorted(mds) != sorted(want):
                return False
            for md in mds.values():
                t = md.topics.get(topic)
                if t is None or t.error_code != 0 or sorted(t.partitions) != list(range(partitions)):
                    return False
                for p in t.partitions.values():
                    if p.error_code != 0 or p.leader < 0 or len(p.replicas) != rf or sorted(p.isr) != sorted(p.replicas):
                        return False
            return mds

        return self.wait_until(ok, timeout, 0.1, msg=f"{topic}: {partitions} partitions, rf {rf}, full ISR, led",
                               detail=lambda: self.describe([topic]))

    # --- clients ---------------------------------------------------------------------------------

    def producer(self, topic: str, partitions: int, ids=None, bootstrap: str | None = None,
                 **kw) -> "ContinuousProducer":
        """A started ContinuousProducer bootstrapping from `bootstrap` (e.g. relay_bootstrap),
        else `ids` (default all brokers), closed at teardown if the test does not stop it."""
        p = ContinuousProducer(bootstrap or self.bootstrap_servers(ids), topic, partitions, **kw)
        self._workloads.append(p)
        return p.start()

    def tail_consumer(self, topic: str, partitions: int, ids=None, bootstrap: str | None = None,
                      **kw) -> "TailConsumer":
        t = TailConsumer(bootstrap or self.bootstrap_servers(ids), topic, partitions, **kw)
        self._workloads.append(t)
        return t.start()

    def admin(self):
        """A confluent-kafka AdminClient over all brokers, kept for the cluster's lifetime."""
        from confluent_kafka.admin import AdminClient

        if self._admin is None:
            self._admin = AdminClient(rdkafka_conf({"bootstrap.servers": self.bootstrap_servers(),
                                                    "reconnect.backoff.max.ms": 1000}))
        return self._admin

    def kafka_python_admin(self):
        """A kafka-python KafkaAdminClient over all brokers (it has AlterPartitionReassignments
        and ListPartitionReassignments, which confluent-kafka's Python AdminClient lacks)."""
        from kafka import KafkaAdminClient

        if self._kp_admin is None:
            self._kp_admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers(),
                                              request_timeout_ms=30000, client_id="sluice-cluster-test")
        return self._kp_admin

    def create_topic(self, name: str, partitions: int = -1, rf: int = -1, config: dict | None = None,
                     assignment: list[list[int]] | None = None, timeout: float = 30.0):
        """CreateTopics through confluent-kafka; then waits until the live brokers agree the topic
        is fully replicated and led."""
        from confluent_kafka.admin import NewTopic

        kw = {"config": {k: str(v) for k, v in (config or {}).items()}}
        if assignment is not None:
            kw["replica_assignment"] = assignment
            partitions, rf = len(assignment), len(assignment[0])
            # librdkafka: the partition count given, the replication factor left unset (-1)
            t = NewTopic(name, num_partitions=partitions, **kw)
        else:
            t = NewTopic(name, num_partitions=partitions, replication_factor=rf, **kw)
        self.admin().create_topics([t], operation_timeout=timeout)[name].result(timeout + 10)
        return self.wait_topic_healthy(name, partitions, rf, timeout)


def _proc_state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


# ---------------------------------------------------------------------------------------------
# Workload: a continuous idempotent producer and a tailing consumer
# ---------------------------------------------------------------------------------------------


def producer_conf(bootstrap: str, **extra) -> dict:
    """An idempotent acks=all librdkafka producer tuned for a cluster whose brokers come and go:
    short request timeouts so requests stuck on a SIGSTOPped broker are retried elsewhere
    quickly, short reconnect back-off so restarted brokers are used again soon."""
    conf = rdkafka_conf({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 60000,
        "request.timeout.ms": 5000,
        "socket.timeout.ms": 5000,
        "retry.backoff.ms": 100,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 1000,
    })
    conf.update(extra)
    return conf


def consumer_conf(bootstrap: str, **extra) -> dict:
    """An assign()-only librdkafka consumer (the group id is never used for coordination) that
    reports an offset reset instead of silently jumping back to the start."""
    conf = rdkafka_conf({
        "bootstrap.servers": bootstrap,
        "group.id": "sluice-cluster-test-unused",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
        "enable.partition.eof": False,
        "socket.timeout.ms": 5000,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 1000,
        "topic.metadata.refresh.interval.ms": 1000,
    })
    conf.update(extra)
    return conf


class ContinuousProducer:
    """Writes b"<seq>" (a global sequence number, so values are unique and increase within each
    partition) round-robin over the partitions at about `rate` records/s from a background thread,
    with at most `max_outstanding` unacknowledged records per partition (a stalled partition does
    not hold up the others), and records every acknowledged record as (partition, offset, value)
    and every failed one as (value, error code, text)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, rate: float = 2000.0,
                 max_outstanding: int = 1000, conf: dict | None = None, name: str = "producer",
                 seq_start: int = 0):
        """`seq_start`: the first sequence number written, so that a second producer writing to
        the same topic after this one (e.g. to more partitions) writes distinct, larger values
        and check_acknowledged can check both producers' records together."""
        self.bootstrap, self.topic, self.partitions = bootstrap, topic, partitions
        self.seq_start = seq_start
        self.rate, self.max_outstanding = rate, max_outstanding
        self.conf = producer_conf(bootstrap, **(conf or {}))
        self.name = name
        self.acked: list[tuple[int, int, bytes]] = []
        self.failed: list[tuple[bytes, int, str]] = []
        self.client_errors: list[str] = []
        self.fatal: list[str] = []
        self.acked_by_partition = [0] * partitions
        self.failed_by_partition = [0] * partitions
        self.produced_by_partition = [0] * partitions
        self.produced = 0
        self.unflushed = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)
        self._exc: BaseException | None = None
        self.flush_timeout = 60.0

    def start(self) -> "ContinuousProducer":
        self._thread.start()
        return self

    def _on_delivery(self, err, msg):
        if err is None:
            p = msg.partition()
            self.acked.append((p, msg.offset(), msg.value()))
            self.acked_by_partition[p] += 1
        else:
            self.failed.append((msg.value(), err.code(), err.str()))
            self.failed_by_partition[msg.partition()] += 1

    def _on_error(self, err):
        text = f"{err.code()}:{err.str()}"
        if len(self.client_errors) < 200:
            self.client_errors.append(text)
        if err.fatal():
            self.fatal.append(text)

    def _run(self):
        from confluent_kafka import Producer

        try:
            p = Producer({**self.conf, "error_cb": self._on_error})
            t0 = time.monotonic()
            seq = 0
            rr = 0  # round-robin cursor
            while not self._stop.is_set():
                due = int((time.monotonic() - t0) * self.rate) - seq if self.rate else 1000
                blocked = False
                for _ in range(max(0, min(due, 1000))):
                    part = self._next_partition(rr)
                    if part is None:
                        blocked = True
                        break
                    try:
                        p.produce(self.topic, b"%d" % (self.seq_start + seq), partition=part,
                                  on_delivery=self._on_delivery)
                    except BufferError:
                        blocked = True
                        break
                    rr = part + 1
                    self.produced_by_partition[part] += 1
                    seq += 1
                    self.produced = seq
                if blocked and self.rate:  # keep to the rate, no burst once there is room again
                    t0 = max(t0, time.monotonic() - seq / self.rate)
                p.poll(0.005)
            self.unflushed = p.flush(self.flush_timeout)
        except BaseException as e:  # noqa: BLE001 - reported by check()/stop()
            self._exc = e

    def _next_partition(self, start: int) -> int | None:
        """The first partition from `start` (round-robin) with room for one more record."""
        for k in range(self.partitions):
            part = (start + k) % self.partitions
            outstanding = (self.produced_by_partition[part] - self.acked_by_partition[part]
                           - self.failed_by_partition[part])
            if outstanding < self.max_outstanding:
                return part
        return None

    def check(self):
        """Raises if the thread died or the producer hit a fatal error."""
        if self._exc is not None:
            raise AssertionError(f"{self.name} thread failed: {self._exc!r}")
        assert not self.fatal, f"{self.name}: fatal producer error(s): {self.fatal}"

    def stop(self, flush_timeout: float = 60.0):
        """Stops producing and waits for every outstanding record's delivery report."""
        self.flush_timeout = flush_timeout
        self._stop.set()
        self._thread.join(flush_timeout + 15)
        assert not self._thread.is_alive(), f"{self.name} did not stop"
        self.check()
        assert self.unflushed == 0, f"{self.name}: {self.unflushed} records without a delivery report after flush"

    def close(self):
        """Stops without waiting for outstanding deliveries (teardown after a failure)."""
        if self._thread.is_alive():
            self.flush_timeout = 0.0
            self._stop.set()
            self._thread.join(15)

    def __repr__(self):
        return f"<ContinuousProducer {self.name} {self.topic}>"

    def summary(self) -> str:
        return (f"{self.name}: produced={self.produced} acknowledged={len(self.acked)} failed={len(self.failed)} "
                f"per partition={self.acked_by_partition}")

    def wait_progress(self, min_new: int = 20, partitions=None, timeout: float = 30.0, what: str = ""):
        """Until every partition in `partitions` (default all) has at least `min_new` records
        acknowledged after this call."""
        parts = list(range(self.partitions)) if partitions is None else list(partitions)
        base = list(self.acked_by_partition)

        def ok():
            self.check()
            return all(self.acked_by_partition[p] - base[p] >= min_new for p in parts)

        try:
            _wait_until(ok, timeout, 0.05, msg=f"{self.name} acknowledgements on partitions {parts} {what}")
        except AssertionError as e:
            gained = [self.acked_by_partition[p] - base[p] for p in range(self.partitions)]
            raise AssertionError(f"{e}; new acks per partition: {gained}; failed so far: {len(self.failed)} "
                                 f"{self.failed[:3]}; client errors: {self.client_errors[-5:]}") from None


# librdkafka consumer errors that mean the consumer would have to jump (an offset reset, log
# truncation detected): each one is a consumer seeing offsets go backwards (or skipping).
def _fatal_consumer_codes():
    from confluent_kafka import KafkaError

    return {KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE,
            getattr(KafkaError, "_LOG_TRUNCATION", KafkaError._AUTO_OFFSET_RESET)}


class TailConsumer:
    """Follows partitions from the beginning in a background thread (assign(), no group),
    recording what it reads and any offset that is not greater than the previous one."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, name: str = "tail-consumer"):
        self.bootstrap, self.topic, self.partitions, self.name = bootstrap, topic, partitions, name
        self.seen: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(partitions)}
        self.backwards: list[tuple[int, int, int]] = []  # (partition, previous offset, offset)
        self.resets: list[str] = []
        self.transient: list[str] = []
        self._stop = threading.Event()
        self._exc: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)

    def start(self) -> "TailConsumer":
        self._thread.start()
        return self

    def _run(self):
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        try:
            fatal = _fatal_consumer_codes()
            c = Consumer(consumer_conf(self.bootstrap))
            try:
                c.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in range(self.partitions)])
                while not self._stop.is_set():
                    for m in c.consume(num_messages=1000, timeout=0.1):
                        if m.error():
                            text = f"{m.error().code()}:{m.error().str()}"
                            (self.resets if m.error().code() in fatal else self.transient).append(text)
                            continue
                        p, off = m.partition(), m.offset()
                        seen = self.seen[p]
                        if seen and off <= seen[-1][0]:
                            self.backwards.append((p, seen[-1][0], off))
                        seen.append((off, m.value()))
            finally:
                c.close()
        except BaseException as e:  # noqa: BLE001 - reported by stop()
            self._exc = e

    def position(self, p: int) -> int:
        s = self.seen[p]
        return s[-1][0] + 1 if s else 0

    def wait_until_caught_up(self, high_watermarks: dict[int, int], timeout: float = 60.0):
        def ok():
            if self._exc is not None:
                raise AssertionError(f"{self.name} failed: {self._exc!r}")
            return all(self.position(p) >= hw for p, hw in high_watermarks.items())

        _wait_until(ok, timeout, 0.05, msg=f"{self.name} to reach the high watermarks {high_watermarks} "
                    f"(at {[self.position(p) for p in high_watermarks]})")

    def stop(self):
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), f"{self.name} did not stop"
        if self._exc is not None:
            raise AssertionError(f"{self.name} failed: {self._exc!r}")

    def close(self):
        self._stop.set()
        self._thread.join(15)

    def __repr__(self):
        return f"<TailConsumer {self.name} {self.topic}>"


def high_watermarks(bootstrap: str, topic: str, partitions: int, timeout: float = 30.0) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(consumer_conf(bootstrap))
    try:
        def get():
            return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=5, cached=False)[1]
                    for p in range(partitions)}

        return _wait_until(get, timeout, 0.2, msg=f"high watermarks of {topic}")
    finally:
        c.close()


@dataclass
class ReadBack:
    records: dict[int, list[tuple[int, bytes]]]  # partition -> [(offset, value)] in read order
    high_watermarks: dict[int, int]
    backwards: list[tuple[int, int, int]] = field(default_factory=list)
    resets: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.records.values())


def read_partitions(bootstrap: str, topic: str, partitions: int, timeout: float = 60.0) -> ReadBack:
    """Reads every partition from the beginning up to its current high watermark with a fresh
    consumer, recording offsets that go backwards and offset resets."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    hws = high_watermarks(bootstrap, topic, partitions)
    out = ReadBack({p: [] for p in range(partitions)}, hws)
    fatal = _fatal_consumer_codes()
    c = Consumer(consumer_conf(bootstrap, **{"fetch.max.bytes": 52428800}))
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        deadline = time.monotonic() + timeout

        def pos(p):
            recs = out.records[p]
            return recs[-1][0] + 1 if recs else 0

        while any(pos(p) < hws[p] for p in range(partitions)):
            if time.monotonic() > deadline:
                raise AssertionError(f"read {[pos(p) for p in range(partitions)]} of high watermarks {hws} "
                                     f"in {timeout}s; resets: {out.resets[:5]}")
            for m in c.consume(num_messages=10000, timeout=0.2):
                if m.error():
                    if m.error().code() in fatal:
                        out.resets.append(f"{m.error().code()}:{m.error().str()}")
                    continue
                p, off = m.partition(), m.offset()
                recs = out.records[p]
                if recs and off <= recs[-1][0]:
                    out.backwards.append((p, recs[-1][0], off))
                recs.append((off, m.value()))
        return out
    finally:
        c.close()


@dataclass
class AckCheck:
    acknowledged: int
    read: int
    lost: list
    duplicated: list
    out_of_order: list
    offset_mismatch: list
    backwards: list
    resets: list
    unacknowledged_read: int
    unacknowledged_duplicated: int = 0

    def line(self) -> str:
        return (f"acknowledged={self.acknowledged} read={self.read} lost={len(self.lost)} "
                f"duplicated={len(self.duplicated)} out_of_order={len(self.out_of_order)} "
                f"offset_mismatch={len(self.offset_mismatch)} offsets_backwards={len(self.backwards)} "
                f"offset_resets={len(self.resets)} read_but_not_acknowledged={self.unacknowledged_read}"
                + (f" (of which read more than once: {self.unacknowledged_duplicated})"
                   if self.unacknowledged_duplicated else ""))

    def assert_ok(self):
        problems = {k: getattr(self, k)[:10] for k in
                    ("lost", "duplicated", "out_of_order", "offset_mismatch", "backwards", "resets")
                    if getattr(self, k)}
        assert not problems, f"{self.line()}\nfirst examples: {problems}"


def check_acknowledged(acked: list[tuple[int, int, bytes]], read: ReadBack) -> AckCheck:
    """Compares acknowledged records (partition, offset, value) with what was read back: every
    acknowledged value read exactly once, in its partition at the acknowledged offset, in produce
    order (values of acknowledged records are increasing sequence numbers b"<n>" within a
    partition), offsets never going backwards, no offset reset."""
    at = {}  # (partition, offset) -> value as read
    where = collections.defaultdict(list)  # value -> [(partition, offset)]
    for p, recs in read.records.items():
        for off, v in recs:
            at[(p, off)] = v
            where[v].append((p, off))
    acked_values = set()
    lost, mismatch = [], []
    for p, off, v in acked:
        acked_values.add(v)
        if v not in where:
            lost.append((p, off, v))
        elif at.get((p, off)) != v:
            mismatch.append({"value": v, "acknowledged_at": (p, off), "read_at": where[v][:3]})
    # Only acknowledged values: a write that failed may legitimately have been appended more than
    # once by a non-idempotent producer's retries (those are counted apart, for information).
    duplicated = [(v, locs[:3]) for v, locs in where.items() if len(locs) > 1 and v in acked_values]
    unacked_duplicated = sum(1 for v, locs in where.items() if len(locs) > 1 and v not in acked_values)
    out_of_order = []
    for p, recs in read.records.items():
        prev = None
        for off, v in recs:
            if v not in acked_values:
                continue
            n = int(v)
            if prev is not None and n <= prev[1]:
                out_of_order.append((p, off, n, "after", prev))
            prev = (off, n)
    unacked = sum(1 for v in where if v not in acked_values)
    return AckCheck(len(acked), read.total, lost, duplicated, out_of_order, mismatch, read.backwards,
                    read.resets, unacked, unacked_duplicated)


def verify_acknowledged(cluster: Cluster, topic: str, partitions: int, acked, tail: TailConsumer | None = None,
                        label: str = "", timeout: float = 60.0) -> AckCheck:
    """Reads everything back through the live brokers, prints the counts, asserts nothing lost,
    duplicated, reordered or moved; with a tail consumer, also that it saw offsets only move
    forward and exactly the records the final read found."""
    bootstrap = cluster.bootstrap_servers(cluster.live_ids())
    read = read_partitions(bootstrap, topic, partitions, timeout)
    res = check_acknowledged(acked, read)
    print(f"{label or topic}: {res.line()} high_watermarks={read.high_watermarks}", flush=True)
    res.assert_ok()
    if tail is not None:
        tail.wait_until_caught_up(read.high_watermarks, timeout)
        tail.stop()
        print(f"{tail.name}: read={sum(len(s) for s in tail.seen.values())} offsets_backwards={len(tail.backwards)} "
              f"offset_resets={len(tail.resets)} transient_errors={len(tail.transient)}", flush=True)
        assert not tail.backwards, f"{tail.name} saw offsets go backwards: {tail.backwards[:10]}"
        assert not tail.resets, f"{tail.name} had offset resets / truncation: {tail.resets[:10]}"
        for p in range(partitions):
            seen = [r for r in tail.seen[p] if r[0] < read.high_watermarks[p]]
            if seen != read.records[p]:
                diff = next((i for i, (a, b) in enumerate(zip(seen, read.records[p])) if a != b),
                            min(len(seen), len(read.records[p])))
                raise AssertionError(
                    f"partition {p}: the tailing consumer read something else than the final read: first "
                    f"difference at index {diff}: tail {seen[diff:diff + 3]} vs final {read.records[p][diff:diff + 3]}")
    return res


# ---------------------------------------------------------------------------------------------
# pytest plugin: marker and fixtures
# ---------------------------------------------------------------------------------------------


def pytest_configure(config):
    config.addinivalue_line("markers", "cluster: multi-broker cluster test (tests/cluster.py)")


if pytest is not None:

    @pytest.fixture
    def make_cluster(request, tmp_path):
        """make_cluster(n, extra_config=None, start=True, bootstrap_count=None) -> Cluster; every
        process is SIGKILLed at teardown, whatever happened; unexpected exits and panics fail
        the test."""
        clusters: list[Cluster] = []
        reported = request.node.__dict__.setdefault("_sluice_brokers", [])

        def make(n: int = 3, extra_config: dict | None = None, start: bool = True, **kw) -> Cluster:
            c = Cluster(n, tmp_path, extra_config, name=f"cluster{len(clusters)}", **kw)
            clusters.append(c)
            reported.extend(c.brokers)  # conftest attaches their log tails to a failure report
            if start:
                c.start_all()
                c.wait_all_ready()
            return c

        try:
            yield make
        finally:
            problems = []
            for c in clusters:
                problems += c.teardown()
        if problems:
            pytest.fail("cluster problems at teardown:\n" + "\n".join(problems) + "\n"
                        + "\n".join(c.logs_tail(40) for c in clusters), pytrace=False)

    @pytest.fixture
    def cluster3(make_cluster) -> Cluster:
        return make_cluster(3)
