"""The lab supervisor: one long-lived process that owns every process of a local lab.

    python -m gtnb.targets.local.supervisor --state-dir DIR [--index N] [--mode M] [--taint-master]

It claims a lab index (127.N.0.0/24), starts the backend, HAProxy (master-worker) and the IGW
Deployment's pods, serves the lab API on 127.N.0.2:7000 and narrates every step in
supervisor.log. SIGTERM, SIGINT or `POST /shutdown` stop it: every pod, HAProxy and the backend
are stopped and waited for before it exits. Its children die with it even if it is SIGKILLed
(PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any

import psutil

from ...errors import ConfigError, GtnbError, LabError
from ..._wait import wait_until
from .addresses import NODE_NAMES, IndexLock, LabAddresses, claim_index
from .api import ApiServer
from .controller import Controller
from .deployment import MODES, AppliedDeployment
from .kubelet import http_status
from .procs import Child, Spawner, become_subreaper, reap_orphans
from .state import LabState, resolve_state_dir
from .values import haproxy_values

__all__ = ["Supervisor", "main", "MODES"]

log = logging.getLogger("gtnb.lab")


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        text = f"{ts} {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class Supervisor:
    """Everything one lab runs, started in order and stopped in reverse."""

    def __init__(self, state: LabState, index: int | None, mode: str, schedulable: tuple[str, ...]) -> None:
        self.state = state
        self.requested_index = index
        self.initial_mode = mode
        self.schedulable = schedulable
        self.stopping = threading.Event()
        self.index_lock: IndexLock | None = None
        self.addresses: LabAddresses | None = None
        self.spawner = Spawner()
        self.backend: Child | None = None
        self.haproxy: Any = None
        self.controller: Controller | None = None
        self.api: ApiServer | None = None
        self.deployment: AppliedDeployment | None = None
        self.status = "starting"
        self.error: str | None = None
        self.started_at = time.time()
        self._version_cache: dict[str, str] = {}
        self._started = False
        self._published: dict[str, Any] = {}

    # -- lab.json ------------------------------------------------------------------------------

    def _pids(self) -> dict[str, Any]:
        pids: dict[str, Any] = {"supervisor": os.getpid()}
        if self.backend is not None and self.backend.running:
            pids["backend"] = self.backend.pid
        if self.haproxy is not None:
            pid = getattr(self.haproxy, "pid", None)
            if pid:
                pids["haproxy"] = pid
        if self.controller is not None:
            pids["pods"] = {p["name"]: p["pids"] for p in self.controller.snapshot()}
        return pids

    def record(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "error": self.error,
            "pid": os.getpid(),
            "index": self.addresses.index if self.addresses else None,
            "addresses": self.addresses.as_dict() if self.addresses else None,
            "api": self.addresses.api_url if self.addresses else None,
            "state_dir": str(self.state.root),
            "schedulable": list(self.schedulable),
            "mode": self.mode(),
            "started_at": self.started_at,
            "pids": self._pids(),
        }

    def publish(self) -> None:
        record = self.record()
        self.state.write(record)
        self._published = record

    def mode(self) -> str:
        return self.deployment.mode if self.deployment is not None else self.initial_mode

    # -- start ---------------------------------------------------------------------------------

    def start(self) -> None:
        self.index_lock = claim_index(self.requested_index)
        self.addresses = a = LabAddresses(self.index_lock.index)
        log.info("lab %d: claimed 127.%d.0.0/24 (state dir %s)", a.index, a.index, self.state.root)
        self.publish()
        # Old pods' logs belong to an old lab: start clean so pod names never collide.
        shutil.rmtree(self.state.pods_dir, ignore_errors=True)
        self.state.pods_dir.mkdir(parents=True)
        self._start_backend()
        self.deployment = AppliedDeployment(self.state, a, self.initial_mode)
        self.deployment.load()
        self._start_haproxy()
        self.controller = Controller(a, self.state.root, self.spawner, self.schedulable, on_change=self._changed)
        self.deployment.restore(self.controller)
        self.api = ApiServer(a.api, 7000, self._routes())
        self.api.start()
        log.info("api: serving on %s", a.api_url)
        self.controller.start()
        self._versions()  # now, in this thread: later API threads must not run subprocesses
        self.status = "serving"
        self._started = True
        self.publish()
        log.info("lab %d: serving (mode %s); pods are being started", a.index, self.mode())

    def _start_backend(self) -> None:
        assert self.addresses is not None
        listen = self.addresses.backend_listen
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.backend = self.spawner.spawn(
            "backend", [sys.executable, "-m", "gtnb.workloads.backend", "--listen", listen],
            env=env, log_path=self.state.backend_log,
        )
        log.info("backend: started (pid %d) on %s", self.backend.pid, listen)
        wait_until(
            lambda: http_status(f"http://{listen}/healthz", 1.0) == 200 or not self.backend.running,
            timeout_s=30, what=f"the backend to answer on {listen}", error=LabError,
        )
        if not self.backend.running:
            raise LabError(f"backend exited with code {self.backend.returncode}: see {self.state.backend_log}")
        log.info("backend: answers on http://%s/healthz", listen)

    def _start_haproxy(self) -> None:
        from ...haproxy_config import render_haproxy_config
        from .haproxy import HaproxyProcess

        assert self.addresses is not None
        values = haproxy_values(self.addresses, self.state.root)
        # Rendered fresh for this lab's index (addresses may differ from the last run); the
        # mode is the one the deployment was last in, so manifest and config stay in sync.
        text = render_haproxy_config(self.mode(), values)
        self.haproxy = HaproxyProcess(self.state.root)
        self.haproxy.start(text)
        log.info("haproxy: started (pid %s), mode %s config, %s:8443", self.haproxy.pid, self.mode(), self.addresses.haproxy)

    # -- API -----------------------------------------------------------------------------------

    def _routes(self) -> dict[str, Any]:
        c, d = self.controller, self.deployment
        assert c is not None and d is not None and self.addresses is not None
        return {
            "GET /healthz": lambda b: {"ok": self.status == "serving"},
            "GET /status": lambda b: {**self.record(), "rollout": c.rollout_status()},
            "GET /pods": lambda b: c.snapshot(),
            "GET /nodes": lambda b: [
                {"name": n, "address": self.addresses.node(n), "ready": True,
                 "schedulable": n in self.schedulable, "version": "gtnb-local"}
                for n in NODE_NAMES
            ],
            "GET /rollout": lambda b: c.rollout_status(),
            "GET /versions": lambda b: self._versions(),
            "POST /apply": lambda b: d.apply(_field(b, "manifest", str), str(b.get("source") or "<manifest>")),
            "POST /scale": lambda b: d.scale(_field(b, "replicas", int)),
            "POST /delete": lambda b: self._delete(_field(b, "pod", str), b.get("grace_period_s")),
            "POST /restart": lambda b: d.restart(),
            "POST /shutdown": lambda b: self._shutdown_request(),
        }

    def _delete(self, pod: str, grace: Any) -> dict[str, Any]:
        assert self.controller is not None
        if grace is not None and (not isinstance(grace, (int, float)) or grace < 0):
            raise ConfigError(f"grace_period_s {grace!r} must be a number >= 0")
        log.info("delete: pod %s (grace period %s)", pod, "from the manifest" if grace is None else f"{grace:g}s")
        self.controller.delete_pod(pod, None if grace is None else float(grace))
        return {"deleted": pod}

    def _shutdown_request(self) -> dict[str, Any]:
        log.info("shutdown requested over the API")
        self.stopping.set()
        return {"stopping": True}

    def _versions(self) -> dict[str, str]:
        """What run.json records: the lab stands in for Kubernetes; Envoy and HAProxy are real."""
        if not self._version_cache:
            v = {"kubernetes": "gtnb-local-lab"}
            try:
                from ...workloads.agent_proc import find_envoy

                out = subprocess.run([find_envoy(), "--version"], capture_output=True, text=True, timeout=30).stdout
                # "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
                v["envoy"] = out.split("version:", 1)[1].strip().split("/")[1]
            except (GtnbError, OSError, IndexError, subprocess.SubprocessError):
                pass  # a version is nice to have in run.json, never worth failing a run
            if self.haproxy is not None:
                try:
                    v["haproxy"] = str(self.haproxy.version())
                except (GtnbError, OSError, subprocess.SubprocessError):
                    pass
            self._version_cache = v
        return dict(self._version_cache)

    def _changed(self) -> None:
        # lab.json carries the pids of every pod process, for leftover checks by PID. Called
        # on every reconcile pass: write only when something changed (2 shared cores).
        try:
            record = self.record()
            if record != self._published:
                self.state.write(record)
                self._published = record
        except OSError:
            log.exception("could not write %s", self.state.lab_json)

    def reap(self) -> None:
        """Reap orphaned descendants that died (we are their subreaper), so none stays a zombie."""
        with self.spawner.lock:
            keep = self.spawner.tracked_pids()
            if self.haproxy is not None and self.haproxy.pid:
                keep.add(self.haproxy.pid)
            for pid, name in reap_orphans(keep):
                log.info("reaped orphan %s (pid %d)", name, pid)

    def _reap_stragglers(self, timeout_s: float = 5.0) -> None:
        # Orphans die by PDEATHSIG a moment after their parent: wait for and reap them all.
        deadline = time.monotonic() + timeout_s
        while True:
            self.reap()
            with self.spawner.lock:
                keep = self.spawner.tracked_pids()
            left = [c for c in psutil.Process().children() if c.pid not in keep]
            if not left:
                return
            if time.monotonic() > deadline:
                for c in left:
                    log.warning("left behind by its parent: %s (pid %d); SIGKILL", c.name(), c.pid)
                    try:
                        c.kill()
                        c.wait(5)
                    except psutil.Error:
                        pass
                return
            time.sleep(0.05)

    def watch(self) -> None:
        """Notice (once) when the backend or HAProxy died under a running lab: say so in
        supervisor.log and lab.json instead of leaving a lab that silently answers nothing."""
        dead = []
        if self.backend is not None and not self.backend.running:
            dead.append(f"backend exited with code {self.backend.returncode} (see {self.state.backend_log})")
        if self.haproxy is not None and not self.haproxy.running:
            dead.append(f"HAProxy exited (see {self.state.root / 'haproxy.stderr.log'})")
        error = "; ".join(dead) or None
        if error and error != self.error:
            self.error = error
            log.error("lab degraded: %s; `gtnb lab down` and `gtnb lab up` restart it", error)
            self.publish()

    # -- stop ----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything in reverse order and wait for every process."""
        self.status = "stopping"
        try:
            self.publish()
        except OSError:
            pass
        log.info("lab: stopping")
        if self.controller is not None:
            self.controller.stop(timeout_s=1.0)
            log.info("pods: all stopped")
        if self.haproxy is not None:
            self.haproxy.stop()
            log.info("haproxy: stopped")
        if self.backend is not None:
            self.backend.stop()
            log.info("backend: stopped")
        if self.api is not None:
            self.api.close()
        self._reap_stragglers()
        self.spawner.close()
        # "failed" only for a lab that never served; a degraded lab that stops is "down".
        self.status = "down" if self._started else "failed"
        self.publish()
        log.info("lab: down")
        if self.index_lock is not None:
            self.index_lock.release()


def _field(body: dict[str, Any], name: str, kind: type) -> Any:
    if name not in body:
        raise ConfigError(f"request needs {name!r}")
    value = body[name]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"{name!r} must be {kind.__name__}, got {value!r}")
    return value


def _lock_state_dir(state: LabState) -> int:
    fd = os.open(state.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise LabError(
            f"another lab supervisor runs in {state.root}: use it, or stop it with "
            f"`gtnb lab down --state-dir {state.root}`"
        ) from None
    return fd


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gtnb.targets.local.supervisor", description=__doc__.split("\n")[0])
    p.add_argument("--state-dir", default=None, help="lab state directory (default .lab/)")
    p.add_argument("--index", type=int, default=None, help="lab index N (default: first free in 100..199)")
    p.add_argument("--mode", default="current", choices=MODES, help="mode on first start (later: the last mode)")
    p.add_argument("--taint-master", action="store_true", help="master1 takes no IGW pod (the seed's cluster)")
    args = p.parse_args(argv)

    state = LabState(resolve_state_dir(args.state_dir))
    handler = logging.FileHandler(state.supervisor_log)
    handler.setFormatter(_Formatter())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False

    try:
        lock_fd = _lock_state_dir(state)
    except LabError as exc:
        print(f"gtnb lab supervisor: {exc}", file=sys.stderr)
        return 2
    become_subreaper()
    schedulable = tuple(n for n in NODE_NAMES if not (args.taint_master and n == "master1"))
    sup = Supervisor(state, args.index, args.mode, schedulable)

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s", signal.Signals(signum).name)
        sup.stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    log.info("supervisor: pid %d starting", os.getpid())
    rc = 0
    try:
        sup.start()
        while not sup.stopping.wait(0.5):
            sup.watch()
            sup.reap()
    except GtnbError as exc:
        sup.error = str(exc)
        log.error("lab failed to start: %s", exc)
        rc = 1
    except BaseException as exc:  # noqa: BLE001 - recorded for lab_up, then the lab is torn down
        sup.error = f"{type(exc).__name__}: {exc}"
        log.exception("lab failed")
        rc = 1
    finally:
        sup.stop()
        os.close(lock_fd)
    return rc


if __name__ == "__main__":
    sys.exit(main())
