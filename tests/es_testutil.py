"""The Elasticsearch test server and helpers for tests/test_es_*.py.

By default the tests start ``noida-db`` (PyPI, a dev extra), an Elasticsearch-API-compatible single
binary, on a free loopback port with a fresh temporary data directory, and stop it at the end. With
``ICSWATCH_TEST_ES_URL`` set (``https://user:pass@es.lab:9200``, plus ``ICSWATCH_TEST_ES_API_KEY`` /
``ICSWATCH_TEST_ES_CA_FILE`` when needed) the same tests run against that cluster instead; the one test
that stops the server itself is skipped there (the proxy outage test covers the same ground on any
cluster). Every test writes under its own index prefix and deletes its indices and templates after.

A missing noida-db FAILS the tests with a message (a silent skip would hide a broken set-up).

``TcpProxy`` stands between the sink and the server so a test can cut the network (refuse new
connections and reset open ones) and restore it, whatever the server.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from browser import free_port

REPO = Path(__file__).resolve().parents[1]
RULE_PCAPS = sorted(glob.glob(str(REPO / "pcaps" / "rule_*.pcap")))
ATTACK_PCAPS = sorted(glob.glob(str(REPO / "pcaps" / "*_attack.pcap")))
ENV_URL = "ICSWATCH_TEST_ES_URL"


def noida_binary() -> str | None:
    """The noida-db binary: the one inside the Python package (no wrapper process), else on PATH."""
    try:
        from importlib.resources import files

        path = files("noida_db").joinpath("noida-db")
        if path.is_file():
            p = str(path)
            if not os.access(p, os.X_OK):
                os.chmod(p, 0o755)
            return p
    except (ImportError, ModuleNotFoundError, OSError):
        pass
    for cand in (shutil.which("noida-db"), str(Path(sys.executable).parent / "noida-db")):
        if cand and Path(cand).is_file():
            return cand
    return None


class EsServer:
    """A cluster to test against: a noida-db we run (``stop``/``start`` work) or an external one."""

    def __init__(self, url: str, *, binary: str | None = None, data_dir: Path | None = None, port: int = 0) -> None:
        self.url = url
        self.binary = binary
        self.data_dir = data_dir
        self.port = port
        self.external = binary is None
        self.api_key = os.environ.get("ICSWATCH_TEST_ES_API_KEY") or None
        self.ca_file = os.environ.get("ICSWATCH_TEST_ES_CA_FILE") or None

    def _cmd(self, *args: str) -> subprocess.CompletedProcess:
        assert self.binary and self.data_dir
        return subprocess.run(
            [self.binary, *args, "--data-dir", str(self.data_dir)], capture_output=True, text=True, timeout=60
        )

    def start(self) -> None:
        r = self._cmd("up", "--host", "127.0.0.1", "--only", "elasticsearch", "--elasticsearch-port", str(self.port))
        if r.returncode != 0:
            raise RuntimeError(f"noida-db up failed ({r.returncode}): {r.stdout[-500:]} {r.stderr[-500:]}")
        self.wait_up()

    def stop(self) -> None:
        r = self._cmd("down")
        if r.returncode != 0:  # pragma: no cover - fall back to the pid
            self._kill()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self._reachable():
            time.sleep(0.05)

    def _kill(self) -> None:
        import json
        import signal

        try:
            pid = json.loads((self.data_dir / "noida.control.json").read_text())["pid"]
            os.kill(int(pid), signal.SIGTERM)
        except (OSError, ValueError, KeyError):
            pass

    def _reachable(self) -> bool:
        parts = urlsplit(self.url)
        try:
            with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 9200), timeout=0.5):
                return True
        except OSError:
            return False

    def wait_up(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.client().info()
                return
            except Exception:
                time.sleep(0.1)
        raise RuntimeError(f"Elasticsearch test server at {self.url} did not answer in {timeout} s")

    def settings(self, prefix: str, spool: Path, url: str | None = None, **kw: Any) -> Any:
        from alerts.es_sink import EsSettings

        base = dict(
            urls=[url or self.url],
            api_key=self.api_key,
            ca_file=self.ca_file,
            index_prefix=prefix,
            spool=str(spool),
            flush_seconds=0.1,
            retry_base=0.05,
            retry_max=0.5,
            timeout=5.0,
            close_timeout=20.0,
            replicas=0 if not self.external else None,
        )
        base.update(kw)
        return EsSettings(**base)

    def client(self) -> Any:
        from alerts.es_sink import EsSettings, connect, make_client

        es, _ = connect(make_client(EsSettings(urls=[self.url], api_key=self.api_key, ca_file=self.ca_file)))
        return es

    def cleanup(self, prefix: str) -> None:
        from alerts import es_templates

        try:
            es = self.client()
            names = list(es.indices.get(index=f"{prefix}-*", allow_no_indices=True, ignore_unavailable=True) or {})
            for name in names:
                es.indices.delete(index=name, ignore_unavailable=True)
            n = es_templates.names(prefix)
            for name in n["templates"].values():
                try:
                    es.indices.delete_index_template(name=name)
                except Exception:
                    pass
            for name in [n["common"], *n["components"].values()]:
                try:
                    es.cluster.delete_component_template(name=name)
                except Exception:
                    pass
        except Exception:
            pass


_SHARED: list[EsServer] = []


def start_noida(data_dir: Path) -> EsServer:
    """A fresh noida-db on a free port with ``data_dir`` (stop it with ``.stop()``)."""
    binary = noida_binary()
    if binary is None:
        pytest.fail(
            "noida-db is not installed: `pip install -e '.[dev]'` installs it (the Elasticsearch-compatible test "
            f"server), or point the tests at a cluster with {ENV_URL}=https://user:pass@host:9200",
            pytrace=False,
        )
    port = free_port()
    server = EsServer(f"http://127.0.0.1:{port}", binary=binary, data_dir=data_dir, port=port)
    server.start()
    return server


@pytest.fixture(scope="session")
def es_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The cluster of the session: ICSWATCH_TEST_ES_URL, else one noida-db shared by every ES test module
    (imported fixtures are per module: the server itself is started once and stopped at exit)."""
    url = os.environ.get(ENV_URL)
    if url:
        server = EsServer(url.rstrip("/"))
        server.wait_up()
        return server
    if not _SHARED:
        server = start_noida(tmp_path_factory.mktemp("noida"))
        atexit.register(server.stop)
        _SHARED.append(server)
    return _SHARED[0]


@pytest.fixture
def es_prefix(es_server: EsServer) -> Any:
    prefix = f"icswatch-test-{uuid.uuid4().hex[:8]}"
    yield prefix
    es_server.cleanup(prefix)


def replay(
    files: list[str], outputs: list[Any], *, batch_size: int = 5, db: Path | None = None, on_event: Any = None
) -> Any:
    """Replay captures through the default rules into ``outputs`` (+ SQLite at ``db``); returns
    (summary, runtime, pipeline). The runtime is closed."""
    rt, pipe = start_replay(outputs, batch_size=batch_size, db=db, on_event=on_event)
    for f in files:
        pipe.replay_file(Path(f))
    return rt.close(), rt, pipe


def start_replay(
    outputs: list[Any], *, batch_size: int = 5, db: Path | None = None, on_event: Any = None
) -> tuple[Any, Any]:
    from alerts.records import Observer
    from alerts.runtime import build_alerting
    from alerts.sqlite_store import SQLiteStore
    from icswatch.config import load_config
    from sensor.pipeline import Pipeline

    cfg = load_config(None, [f"outputs.batch_size={batch_size}", "outputs.flush_seconds=0.05"])
    outs = list(outputs)
    if db is not None:
        outs.insert(0, SQLiteStore(db, Observer.from_config(cfg.sensor)))
    rt = build_alerting(cfg, outputs=outs)
    if on_event is not None:
        inner = rt.on_event

        def both(ev: Any) -> None:
            on_event(ev)
            inner(ev)

        cb = both
    else:
        cb = rt.on_event
    pipe = Pipeline(cfg.sensor, on_event=cb, on_tick=rt.on_tick)
    return rt, pipe


def es_ids(es: Any, alias: str) -> list[str]:
    """Every document id behind an alias (all of them, paged)."""
    es.indices.refresh(index=alias, ignore_unavailable=True)
    ids: list[str] = []
    after = None
    while True:
        kw: dict[str, Any] = {"size": 1000, "sort": [{"event.id": "asc"}], "source": False}
        if after is not None:
            kw["search_after"] = after
        hits = es.search(index=alias, ignore_unavailable=True, allow_no_indices=True, **kw)["hits"]["hits"]
        if not hits:
            return ids
        ids += [h["_id"] for h in hits]
        after = hits[-1]["sort"]


class TcpProxy:
    """A loopback TCP proxy to ``target`` that the test can take down (listener closed, open connections
    reset) and bring back on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        if self._listener is not None:
            return
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        s.settimeout(0.2)
        self._listener = s
        self._stop.clear()
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def down(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            for c in list(self._conns):
                try:
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset
                    c.close()
                except OSError:
                    pass
            self._conns.clear()

    def close(self) -> None:
        self.down()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._stop.is_set():
                    client.close()
                    upstream.close()
                    return
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            src.settimeout(None)
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)
