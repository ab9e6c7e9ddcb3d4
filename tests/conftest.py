"""Test harness for Sluice's end-to-end tests.

Every test gets its own broker process (free ports, its own data directory under tmp_path), so
tests are independent and safe to run in parallel (pytest -n 2). The broker binary is
$SLUICE_BROKER_BIN, else target/release/sluice-broker (honouring $CARGO_TARGET_DIR).

Fixtures:
  broker            a running broker with default settings (override with
                    @pytest.mark.broker_settings(**{"num.partitions": 3}))
  broker_factory    make_broker(settings=None, start=True) -> Broker, for tests that need several
                    brokers or special settings; all are stopped (and checked) at teardown
  topic             a unique topic name for the test

Broker: start(), stop() (SIGTERM, asserts a clean exit), kill() (SIGKILL), restart(clean=...)
(same data dir and Kafka port), admin() (a cached confluent AdminClient), topics() (raw Metadata),
http_get(), metrics(), metric(), partition_dir(), segment_files(), alive(), bootstrap.
When a test fails, the tail of each of its brokers' stderr is attached to the report. At teardown
a broker that died on its own or printed a Rust panic fails the test.

Helpers (import from conftest): wait_until, produce_confluent, consume_confluent,
consume_kafka_python, metric_value, run_kcat.
"""

from __future__ import annotations

import logging
import os
import re
import selectors
import signal
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from kit.process import set_pdeathsig, wait_for

# Multi-broker cluster harness and fixtures (make_cluster, cluster3, the `cluster` marker).
pytest_plugins = ["cluster"]

ROOT = Path(__file__).resolve().parent.parent
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
BROKER_BIN = Path(os.environ.get("SLUICE_BROKER_BIN", TARGET_DIR / "release" / "sluice-broker"))
OPERATOR_BIN = Path(os.environ.get("SLUICE_OPERATOR_BIN", TARGET_DIR / "release" / "sluice-operator"))
KCAT = os.environ.get("KCAT", shutil.which("kcat") or "/usr/bin/kcat")

READY_RE = re.compile(r"^sluice-broker ready kafka=(\S+):(\d+) http=(\S+):(\d+)\s*$")
START_TIMEOUT = float(os.environ.get("SLUICE_START_TIMEOUT", "60"))
STOP_TIMEOUT = float(os.environ.get("SLUICE_STOP_TIMEOUT", "30"))

# Default settings every test broker gets (tests override per key).
DEFAULT_SETTINGS: dict[str, str] = {}

# librdkafka logs go to this logger (pytest shows them as "Captured log" for failing tests) rather
# than to the worker's stderr, where clients outliving their test would keep printing.
RDKAFKA_LOG = logging.getLogger("librdkafka")
RDKAFKA_LOG.addHandler(logging.NullHandler())


def rdkafka_conf(conf: dict) -> dict:
    return {"logger": RDKAFKA_LOG, **conf}


# One copy of each, shared with the kit (tests/kit/process.py).
_set_pdeathsig = set_pdeathsig
wait_until = wait_for


class BrokerStartError(AssertionError):
    pass


class Broker:
    def __init__(self, workdir: Path, name: str = "broker", settings: dict | None = None,
                 node_id: int = 0, extra_args: list[str] | None = None):
        self.name = name
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / f"{name}-data"
        self.stderr_path = self.workdir / f"{name}.stderr.log"
        self.settings = {**DEFAULT_SETTINGS, **{k: str(v) for k, v in (settings or {}).items()}}
        self.node_id = node_id
        self.extra_args = list(extra_args or [])
        self.port = 0
        self.http_port = 0
        self.host = "127.0.0.1"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.expect_running = False
        self.stdout_lines: list[str] = []
        self.exit_codes: list[int] = []

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [
            str(BROKER_BIN),
            "--data-dir", str(self.data_dir),
            "--listener", f"127.0.0.1:{self.port}",
            "--http-listener", "127.0.0.1:0",
            "--node-id", str(self.node_id),
        ]
        for k, v in self.settings.items():
            cmd += ["--set", f"{k}={v}"]
        return cmd + self.extra_args

    def start(self, timeout: float = START_TIMEOUT) -> "Broker":
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        if not BROKER_BIN.exists():
            raise BrokerStartError(
                f"broker binary not found at {BROKER_BIN} "
                "(run `cargo build --release -p sluice-broker` or set SLUICE_BROKER_BIN)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._admin = None
        self.starts += 1
        cmd = self.command()
        with open(self.stderr_path, "ab") as f:
            f.write(f"\n===== start #{self.starts}: {' '.join(cmd)}\n".encode())
        errf = open(self.stderr_path, "ab")
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        env.setdefault("NO_COLOR", "1")
        try:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=errf, stdin=subprocess.DEVNULL,
                env=env, preexec_fn=_set_pdeathsig)
        finally:
            errf.close()
        self.expect_running = True
        line = self._wait_ready(timeout)
        m = READY_RE.match(line)
        host, port, hport = m.group(1), int(m.group(2)), int(m.group(4))
        if self.port:
            assert port == self.port, f"restarted broker listens on {port}, asked for {self.port}"
        self.host, self.port, self.http_port = host, port, hport
        return self

    def _wait_ready(self, timeout: float) -> str:
        fd = self.proc.stdout.fileno()
        os.set_blocking(fd, False)
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        buf = b""
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._abort_start()
                    raise BrokerStartError(
                        f"broker printed no ready line within {timeout}s; stdout so far: {buf!r}\n"
                        + self.stderr_tail())
                for _key, _ev in sel.select(timeout=min(left, 0.5)):
                    try:
                        chunk = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    if not chunk:  # EOF: the broker exited (or closed stdout)
                        rc = self.proc.wait(timeout=STOP_TIMEOUT)
                        self.expect_running = False
                        raise BrokerStartError(
                            f"broker exited with code {rc} before it was ready; stdout: {buf!r}\n"
                            + self.stderr_tail())
                    buf += chunk
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    line = raw.decode(errors="replace")
                    self.stdout_lines.append(line)
                    if READY_RE.match(line):
                        self._drain_stdout(buf)
                        return line
        finally:
            sel.close()

    def _drain_stdout(self, pending: bytes):
        """Keeps reading stdout after the ready line so the pipe never fills up."""
        proc = self.proc
        fd = proc.stdout.fileno()
        os.set_blocking(fd, True)
        if pending:
            self.stdout_lines.append(pending.decode(errors="replace"))

        def run():
            try:
                while True:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        return
                    self.stdout_lines.append(chunk.decode(errors="replace"))
            except OSError:
                return

        threading.Thread(target=run, daemon=True).start()

    def _abort_start(self):
        self.expect_running = False
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT, check: bool = True) -> int:
        """SIGTERM and wait. With check, asserts the broker exited by itself with code 0."""
        assert self.proc is not None
        self.expect_running = False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.exit_codes.append(self.proc.returncode)
                raise AssertionError(f"broker did not exit within {timeout}s of SIGTERM\n" + self.stderr_tail())
        rc = self.proc.returncode
        self.exit_codes.append(rc)
        if check:
            assert rc == 0, f"broker exited with {rc} after SIGTERM (want 0, a clean shutdown)\n" + self.stderr_tail()
        return rc

    def kill(self):
        """SIGKILL: an unclean stop."""
        assert self.proc is not None
        self.expect_running = False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=STOP_TIMEOUT)
        self.exit_codes.append(self.proc.returncode)

    def restart(self, clean: bool = True, timeout: float = START_TIMEOUT) -> "Broker":
        """Stops (SIGTERM if clean else SIGKILL) and starts again on the same data dir and port."""
        if self.alive():
            self.stop() if clean else self.kill()
        return self.start(timeout=timeout)

    # --- diagnostics -------------------------------------------------------------------------

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stderr_tail(self, lines: int = 60) -> str:
        tail = self.stderr_text().splitlines()[-lines:]
        return f"--- {self.name} stderr ({self.stderr_path}), last {len(tail)} lines ---\n" + "\n".join(tail)

    def panics(self) -> list[str]:
        return [l for l in self.stderr_text().splitlines() if "panicked at" in l]

    # --- clients -------------------------------------------------------------------------------

    def admin(self):
        """A confluent-kafka AdminClient for this broker, kept alive for the broker's lifetime
        (futures of a garbage-collected AdminClient fail with _DESTROY)."""
        from confluent_kafka.admin import AdminClient

        if getattr(self, "_admin", None) is None:
            self._admin = AdminClient(rdkafka_conf({"bootstrap.servers": self.bootstrap}))
        return self._admin

    def topics(self) -> dict[str, list[int]]:
        """All topics and their partition ids, read with a plain Metadata v8 request (no
        auto-creation), independent of any client library."""
        import kafka_wire

        with kafka_wire.Conn.to(self.bootstrap) as c:
            md = c.metadata(None, allow_auto_create=False)
        return {t: sorted(parts) for t, (code, parts) in md.items() if code == 0}

    # --- HTTP side port ----------------------------------------------------------------------

    def http_get(self, path: str, timeout: float = 10.0) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def metrics(self) -> list[tuple[str, dict, float]]:
        status, text = self.http_get("/metrics")
        assert status == 200, f"/metrics returned {status}"
        return parse_prometheus(text)

    def metric(self, name: str, **labels) -> float:
        return metric_value(self.metrics(), name, **labels)

    # --- files ---------------------------------------------------------------------------------

    def partition_dir(self, topic: str, partition: int = 0) -> Path:
        want = f"{topic}-{partition}"
        found = [p for p in self.data_dir.rglob(want) if p.is_dir()]
        if not found:
            listing = "\n".join(str(p.relative_to(self.data_dir)) for p in sorted(self.data_dir.rglob("*")))
            raise AssertionError(f"no partition directory {want!r} under {self.data_dir}; contents:\n{listing}")
        assert len(found) == 1, f"several directories named {want}: {found}"
        return found[0]

    def segment_files(self, topic: str, partition: int = 0) -> list[Path]:
        """The partition's `<baseOffset>.log` files, ordered by base offset."""
        d = self.partition_dir(topic, partition)
        logs = [p for p in d.iterdir() if p.suffix == ".log" and p.stem.isdigit()]
        return sorted(logs, key=lambda p: int(p.stem))


# ---------------------------------------------------------------------------------------------
# Prometheus text parsing
# ---------------------------------------------------------------------------------------------

_SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> list[tuple[str, dict, float]]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        if not m:
            continue
        labels = dict(_LABEL_RE.findall(m.group(3) or ""))
        try:
            value = float(m.group(4))
        except ValueError:
            continue
        out.append((m.group(1), labels, value))
    return out


def metric_value(samples, name: str, **labels) -> float:
    """Sum of all samples called `name` whose labels include `labels`. Accepts the name with or
    without a `_total` suffix (OpenMetrics exposition adds it to counters)."""
    names = {name, name + "_total", name.removesuffix("_total")}
    matched = [v for n, l, v in samples if n in names and all(l.get(k) == str(x) for k, x in labels.items())]
    assert matched, f"no metric {name}{labels or ''} in /metrics"
    return sum(matched)


# ---------------------------------------------------------------------------------------------
# Waiting
# ---------------------------------------------------------------------------------------------



# ---------------------------------------------------------------------------------------------
# Client helpers
# ---------------------------------------------------------------------------------------------


def consumer_conf_confluent(bootstrap: str, **extra) -> dict:
    """librdkafka consumer for assign()-only use: it requires a group.id, but with assign(),
    explicit offsets and commits disabled, the group is never used for coordination."""
    conf = {
        "logger": RDKAFKA_LOG,
        "bootstrap.servers": bootstrap,
        "group.id": "sluice-test-unused",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "socket.timeout.ms": 10000,
    }
    conf.update(extra)
    return conf


def produce_confluent(bootstrap: str, topic: str, records, conf: dict | None = None,
                      flush_timeout: float = 60.0):
    """Produces (value, key, partition, headers, timestamp) tuples/dicts; returns delivery reports
    as a list of (err, partition, offset) in produce order. Asserts everything was delivered."""
    from confluent_kafka import Producer

    c = rdkafka_conf({"bootstrap.servers": bootstrap, "linger.ms": 5})
    c.update(conf or {})
    p = Producer(c)
    reports = []

    def cb(err, msg):
        reports.append((err, msg.partition(), msg.offset()))

    for r in records:
        if not isinstance(r, dict):
            r = {"value": r}
        kw = {k: v for k, v in r.items() if v is not None}
        while True:
            try:
                p.produce(topic, on_delivery=cb, **kw)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    left = p.flush(flush_timeout)
    assert left == 0, f"{left} messages still undelivered after {flush_timeout}s"
    return reports


def consume_confluent(bootstrap: str, topic: str, partition: int = 0, count: int | None = None,
                      offset=None, timeout: float = 30.0, conf: dict | None = None):
    """Reads `count` messages from one partition (from `offset`, default the beginning) with
    assign(); when count is None, reads up to the partition's high watermark."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer(consumer_conf_confluent(bootstrap, **(conf or {})))
    try:
        if count is None:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            count = hi - (lo if offset is None or offset < 0 else offset)
        c.assign([TopicPartition(topic, partition, OFFSET_BEGINNING if offset is None else offset)])
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"consumed {len(out)} of {count} messages from {topic}-{partition} in {timeout}s")
            for m in c.consume(num_messages=min(10000, count - len(out)), timeout=0.5):
                if m.error():
                    raise AssertionError(f"consumer error: {m.error()}")
                out.append(m)
        return out
    finally:
        c.close()


def consume_kafka_python(bootstrap: str, topic: str, partition: int = 0, count: int = 1,
                         offset: int | None = None, timeout: float = 30.0, **conf):
    """Reads `count` records from one partition with a kafka-python KafkaConsumer that is assigned
    the partition (no group)."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", **conf)
    try:
        tp = TopicPartition(topic, partition)
        c.assign([tp])
        if offset is None:
            c.seek_to_beginning(tp)
        else:
            c.seek(tp, offset)
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"kafka-python consumed {len(out)} of {count} records in {timeout}s")
            for recs in c.poll(timeout_ms=500, max_records=count - len(out)).values():
                out.extend(recs)
        return out
    finally:
        c.close()


def run_kcat(*args, input: bytes | None = None, timeout: float = 60.0, check: bool = True):
    """Runs kcat; returns CompletedProcess (bytes). With check, asserts exit code 0."""
    cmd = [KCAT, *map(str, args)]
    p = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout)
    if check:
        assert p.returncode == 0, (
            f"{' '.join(cmd)} exited {p.returncode}\nstdout: {p.stdout[-2000:]!r}\nstderr: {p.stderr[-4000:]!r}")
    return p


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------


def pytest_configure(config):
    config.addinivalue_line("markers", "broker_settings(**kv): settings (--set key=value) for the `broker` fixture")


@pytest.fixture
def broker_factory(request, tmp_path):
    brokers: list[Broker] = []
    request.node._sluice_brokers = brokers

    def make(settings: dict | None = None, start: bool = True, name: str | None = None, **kw) -> Broker:
        b = Broker(tmp_path, name=name or f"broker{len(brokers)}", settings=settings, **kw)
        brokers.append(b)
        if start:
            b.start()
        return b

    yield make

    problems = []
    for b in brokers:
        if b.proc is None:
            continue
        if b.expect_running and not b.alive():
            problems.append(f"{b.name} exited on its own with code {b.proc.returncode}")
        if b.alive():
            try:
                b.stop(check=False)
            except AssertionError as e:
                problems.append(str(e).splitlines()[0])
        panics = b.panics()
        if panics:
            problems.append(f"{b.name} panicked: {panics[:3]}")
    if problems:
        pytest.fail("broker problems at teardown:\n" + "\n".join(problems)
                    + "\n" + "\n".join(b.stderr_tail(40) for b in brokers), pytrace=False)


@pytest.fixture
def broker(request, broker_factory) -> Broker:
    marker = request.node.get_closest_marker("broker_settings")
    settings = dict(marker.kwargs) if marker else {}
    return broker_factory(settings=settings)


@pytest.fixture
def topic(request) -> str:
    base = re.sub(r"[^a-zA-Z0-9._-]", "_", request.node.name)[:150]
    return f"{base}-{uuid.uuid4().hex[:8]}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for b in getattr(item, "_sluice_brokers", []):
            rep.sections.append((f"sluice-broker {b.name} ({rep.when})", b.stderr_tail(80)))
