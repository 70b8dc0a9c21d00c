"""One IGW pod's life, as kubelet lives it: start the containers, probe readiness, and on delete
run each container's preStop hook, SIGTERM it right after its own hook, SIGKILL it at the grace
deadline.

Kubelet's rule for the grace period (kuberuntime `killContainer`): the hook may use the whole
grace period; whatever is left is the SIGTERM window, but never less than 2 s. So a hook that is
still running at the deadline is abandoned and the container still gets SIGTERM and 2 more
seconds before SIGKILL. Hooks of all containers run in parallel.
"""

from __future__ import annotations

import http.client
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .procs import Child, Spawner

__all__ = ["HookSpec", "ContainerRun", "PodRuntime", "MIN_SIGTERM_WINDOW_S", "http_status", "probe_ok"]

log = logging.getLogger("gtnb.lab")

MIN_SIGTERM_WINDOW_S = 2.0  # kubelet's minimumGracePeriodInSeconds
PROBE_PERIOD_STARTING_S = 0.2  # until Ready: quick, so `up` and rollouts are not slowed
PROBE_PERIOD_RUNNING_S = 1.0  # once Ready: sparse, so hc.log is not flooded with check lines


@dataclass(frozen=True)
class HookSpec:
    """A preStop hook as the manifest states it."""

    kind: str  # "httpGet" | "exec"
    path: str = "/"
    port: int = 0
    host: str = ""  # empty: the pod's address (kubelet's default)
    command: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.kind == "httpGet":
            return f"httpGet :{self.port}{self.path}"
        return "exec " + " ".join(self.command)


@dataclass(frozen=True)
class ContainerRun:
    """A container ready to run on a node: command line, environment, hook and readiness URL."""

    name: str
    argv: tuple[str, ...]
    env: dict[str, str]
    pre_stop: HookSpec | None = None
    ready_url: str | None = None  # http://host:port/path answering 200, or tcp://host:port accepting


def http_status(url: str, timeout_s: float) -> int | None:
    # http.client rather than httpx: the supervisor probes often and must stay light.
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
    try:
        conn.request("GET", "/" + path, headers={"User-Agent": "kube-probe/1.30"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def probe_ok(url: str, timeout_s: float = 1.0) -> bool:
    """kubelet's readiness probe: httpGet (200..399) or tcpSocket (the port accepts)."""
    if url.startswith("tcp://"):
        host, _, port = url[len("tcp://"):].rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=timeout_s):
                return True
        except OSError:
            return False
    status = http_status(url, timeout_s)
    return status is not None and 200 <= status < 400


@dataclass
class PodRuntime:
    """A pod on the supervisor side. Created Pending; `start(node)` binds it to a node."""

    name: str
    template_hash: str
    mode: str | None
    grace_period_s: float
    pod_dir: Path
    build: Callable[[str, str], list[ContainerRun]]  # (node, node address) -> containers
    spawner: Spawner
    on_gone: Callable[[PodRuntime], None]
    labels: dict[str, str] = field(default_factory=dict)
    node: str | None = None
    phase: str = "Pending"
    reason: str | None = "Unschedulable"
    ready: bool = False
    created: float = field(default_factory=time.time)
    deletion_deadline: float | None = None
    children: dict[str, Child] = field(default_factory=dict)
    _runs: list[ContainerRun] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _terminating: threading.Event = field(default_factory=threading.Event)
    _shortened_to: float | None = None  # monotonic deadline set by a second, shorter delete

    # -- start --------------------------------------------------------------------------------

    def start(self, node: str, address: str) -> None:
        """Bind to `node` and start every container (kubelet's SyncPod)."""
        self.node, self.reason, self.phase = node, None, "Running"
        self.pod_dir.mkdir(parents=True, exist_ok=True)
        self._runs = self.build(node, address)
        log.info("pod %s: scheduled on %s (%s)", self.name, node, address)
        for run in self._runs:
            self._start_container(run)
        threading.Thread(target=self._probe_loop, name=f"probe:{self.name}", daemon=True).start()

    def _start_container(self, run: ContainerRun) -> None:
        child = self.spawner.spawn(
            f"pod {self.name}/{run.name}",
            run.argv,
            env=run.env,
            log_path=self.pod_dir / f"{run.name}.log",
            exit_file=self.pod_dir / f"{run.name}.exit",
            on_exit=self._container_exited,
        )
        self.children[run.name] = child
        log.info("pod %s: container %s started (pid %d)", self.name, run.name, child.pid)

    def _container_exited(self, child: Child) -> None:
        name = child.name.rsplit("/", 1)[1]
        # A container's other processes (Envoy under the agent) die with it, as in a pid namespace.
        child.signal_group(signal.SIGKILL)
        log.info("pod %s: container %s exited with code %s", self.name, name, child.returncode)
        if not self._terminating.is_set():
            self.ready = False
            # No restart (the lab shows the failure instead of hiding it in a crash loop).
            self.reason = f"Error: container {name} exited with code {child.returncode}"
            log.warning("pod %s: container %s died while Running; not restarted (see %s)",
                        self.name, name, child.log_path)
        if all(not c.running for c in list(self.children.values())) and self._terminating.is_set():
            self._gone()

    def _gone(self) -> None:
        with self._lock:
            if self.phase == "Gone":
                return
            self.phase = "Gone"
        log.info("pod %s: gone (all containers exited)", self.name)
        self.on_gone(self)

    def _probe_loop(self) -> None:
        urls = [r.ready_url for r in self._runs if r.ready_url]
        while not self._terminating.is_set():
            ok = all(probe_ok(u) for u in urls)
            if ok and not self.ready and not self._terminating.is_set():
                log.info("pod %s: Ready (%s)", self.name, ", ".join(urls))
            elif self.ready and not ok:
                log.info("pod %s: not Ready any more", self.name)
            self.ready = ok and not self._terminating.is_set()
            period = PROBE_PERIOD_RUNNING_S if self.ready else PROBE_PERIOD_STARTING_S
            self._terminating.wait(period)

    # -- delete -------------------------------------------------------------------------------

    @property
    def terminating(self) -> bool:
        return self._terminating.is_set()

    def delete(self, grace_period_s: float | None = None) -> None:
        """Start deleting (returns at once). A second delete may only shorten the deadline."""
        grace = self.grace_period_s if grace_period_s is None else max(0.0, float(grace_period_s))
        now = time.monotonic()
        with self._lock:
            if self._terminating.is_set():
                if self.deletion_deadline is not None and now + grace < self.deletion_deadline:
                    self.deletion_deadline = self._shortened_to = now + grace
                    log.info("pod %s: grace period shortened to %gs", self.name, grace)
                return
            self._terminating.set()
            self.deletion_deadline = now + grace
            self.ready = False
            pending = self.phase == "Pending"
            self.phase = "Terminating"
        log.info("pod %s: Terminating (grace period %gs)", self.name, grace)
        if pending or not self.children:
            self._gone()
            return
        for run in self._runs:
            child = self.children.get(run.name)
            if child is not None:
                threading.Thread(
                    target=self._kill_container,
                    args=(run, child, grace == 0),
                    name=f"kill:{self.name}/{run.name}",
                    daemon=True,
                ).start()

    def _remaining(self) -> float:
        assert self.deletion_deadline is not None
        return self.deletion_deadline - time.monotonic()

    def _kill_container(self, run: ContainerRun, child: Child, force: bool) -> None:
        if force:
            log.info("pod %s: SIGKILL to %s (grace period 0)", self.name, run.name)
            child.signal_group(signal.SIGKILL)
            return
        if run.pre_stop is not None and child.running:
            returned = self._run_hook(run, child)
            window = max(self._remaining(), MIN_SIGTERM_WINDOW_S)
            why = "after its hook returned" if returned else "with its hook abandoned"
        else:
            window = max(self._remaining(), MIN_SIGTERM_WINDOW_S)
            why = "(no preStop hook)"
        log.info("pod %s: SIGTERM to %s %s; SIGKILL in %.1fs", self.name, run.name, why, window)
        child.signal(signal.SIGTERM)
        sigkill_at = time.monotonic() + window
        while child.running:
            # A second delete with a shorter grace period (force delete) moves the kill earlier.
            at = sigkill_at if self._shortened_to is None else min(sigkill_at, self._shortened_to)
            left = at - time.monotonic()
            if left <= 0:
                log.info("pod %s: SIGKILL to %s at the grace deadline", self.name, run.name)
                child.signal_group(signal.SIGKILL)
                break
            child.wait(min(left, 0.2))
        child.wait(10.0)
        if all(not c.running for c in list(self.children.values())):
            self._gone()

    def _run_hook(self, run: ContainerRun, child: Child) -> bool:
        """Run the container's preStop hook until it returns or the deadline passes.
        Returns whether it returned."""
        hook = run.pre_stop
        assert hook is not None and self.node is not None
        log.info("pod %s: preStop %s started (container %s)", self.name, hook.describe(), run.name)
        t0 = time.monotonic()
        done = threading.Event()
        result: list[str] = []

        def call() -> None:
            try:
                result.append(self._call_hook(hook, run, self._remaining()))
            finally:
                done.set()

        threading.Thread(target=call, name=f"hook:{self.name}/{run.name}", daemon=True).start()
        while not done.is_set():
            left = self._remaining()
            if left <= 0:
                log.info(
                    "pod %s: preStop of %s still running at the grace deadline after %.3fs; "
                    "SIGTERM now and %gs more (kubelet's minimum)",
                    self.name, run.name, time.monotonic() - t0, MIN_SIGTERM_WINDOW_S,
                )
                return False
            done.wait(min(left, 0.2))
        log.info(
            "pod %s: preStop %s returned after %.3fs: %s",
            self.name, hook.describe(), time.monotonic() - t0, result[0] if result else "?",
        )
        return True

    def _call_hook(self, hook: HookSpec, run: ContainerRun, timeout_s: float) -> str:
        timeout_s = max(timeout_s, 0.1)
        if hook.kind == "httpGet":
            host = hook.host or self._address()
            url = f"http://{host}:{hook.port}{hook.path}"
            status = http_status(url, timeout_s)
            return f"HTTP {status}" if status is not None else "no answer"
        # exec: the command runs "in the container": its environment, on this machine. Spawned
        # by the long-lived spawner thread and waited here; killed if abandoned at the deadline.
        hook_child = self.spawner.spawn(
            f"pod {self.name}/{run.name} preStop", hook.command, env=run.env,
            log_path=self.pod_dir / f"{run.name}.prestop.log",
        )
        if not hook_child.wait(timeout_s):
            hook_child.signal_group(signal.SIGKILL)
            hook_child.wait(5.0)
            return "abandoned at the deadline"
        return f"exit {hook_child.returncode}"

    def _address(self) -> str:
        for run in self._runs:
            if run.ready_url:
                return run.ready_url.split("://", 1)[1].rsplit(":", 1)[0]
        raise RuntimeError(f"pod {self.name} has no address")

    # -- supervisor shutdown ------------------------------------------------------------------

    def kill_now(self, timeout_s: float = 3.0) -> None:
        """Lab teardown: SIGTERM every container, SIGKILL after `timeout_s`, wait for all."""
        self._terminating.set()
        for child in self.children.values():
            child.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in self.children.values():
            if not child.wait(max(deadline - time.monotonic(), 0.0)):
                child.signal_group(signal.SIGKILL)
        for child in self.children.values():
            child.wait(10.0)
            child.signal_group(signal.SIGKILL)

    def describe(self) -> dict[str, object]:
        """The pod as the API reports it (the fields of gtnb.targets.base.Pod)."""
        return {
            "name": self.name,
            "node": self.node,
            "mode": self.mode,
            "phase": "Terminating" if self.terminating else self.phase,
            "ready": self.ready,
            "template_hash": self.template_hash,
            "reason": self.reason,
            "created": self.created,
            "containers": [r.name for r in self._runs] or ["istio-proxy", "hc"],
            "pids": {n: c.pid for n, c in list(self.children.items()) if c.running},
        }

