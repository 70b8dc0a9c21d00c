"""Lifecycle of the local lab: `gtnb lab up | down | status`, and `local_target()`, the context
manager gtnb.targets.open_target uses.

`lab_up` starts the supervisor detached (it outlives the command) and returns once the lab
serves: backend and HAProxy up, the Deployment's pods Ready and HAProxy seeing them UP.
`local_target` attaches to such a lab, or brings one up as its own child (dying with it) and
takes it down when the block ends, also on an exception or Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from ..._wait import wait_until
from ...errors import LabError
from ..base import Frontend
from .addresses import HAPROXY_HTTPS_PORT, LabAddresses
from .client import LocalCluster
from .procs import set_pdeathsig
from .state import LabState, resolve_state_dir
from .status import all_pids, lab_status, live_record, pid_alive, running_record, show_stat_rows, tail
from .values import haproxy_values, lab_certs

__all__ = ["lab_up", "lab_down", "lab_status", "local_target", "LocalTarget", "UP_TIMEOUT_S"]

UP_TIMEOUT_S = 120.0  # pods start Envoy; on 2 shared cores under test load this takes a while
DOWN_TIMEOUT_S = 30.0
_LAB_PROCESS_NAMES = ("python", "python3", "envoy", "haproxy")

# Supervisors this process started: wait() them, or they linger as zombies (PID 1 here does
# not reap).
_children: dict[Path, subprocess.Popen[bytes]] = {}


class LocalTarget:
    """The local lab as a gtnb Target: its Cluster, its Balancer, and the HAProxy values."""

    name = "local"

    def __init__(self, state_dir: str | Path | None = None) -> None:
        from .haproxy import LocalBalancer  # E2's part; imported here to keep the layering one-way

        self.state_dir = resolve_state_dir(state_dir)
        record = live_record(LabState(self.state_dir))
        if record is None:
            raise LabError(f"no lab runs in {self.state_dir}: start one with `gtnb lab up`")
        self.addresses = LabAddresses(int(record["index"]))
        self.cluster = LocalCluster(self.state_dir, str(record["api"]))
        ca, _ = lab_certs()
        self.frontend = Frontend(host=self.addresses.haproxy, port=HAPROXY_HTTPS_PORT, sni="example.local", ca=ca)
        self.balancer = LocalBalancer(self.state_dir, self.frontend)

    def haproxy_values(self) -> dict[str, str]:
        """The `${GTNB_*}` values that render haproxy/haproxy-<mode>.cfg for this lab."""
        return haproxy_values(self.addresses, self.state_dir)

    def close(self) -> None:
        """Nothing to release: the lab's lifetime is the lab's (or `local_target`'s) business."""


# -- attach or start ----------------------------------------------------------------------------


def _attach_or_spawn(state: LabState, owned: bool, taint_master: bool) -> subprocess.Popen[bytes] | None:
    """Attach to the lab in `state` (waiting for one that is still starting), or start one.

    Returns:
        The new supervisor process, or None when attached to an existing lab.
    """
    if running_record(state) is not None:
        _wait_serving(state, None, UP_TIMEOUT_S)
        return None
    popen = _spawn_supervisor(state, owned=owned, taint_master=taint_master)
    try:
        _wait_serving(state, popen, UP_TIMEOUT_S)
    except BaseException:
        _stop(state, popen)
        raise
    return popen


# -- up ------------------------------------------------------------------------------------------


def _spawn_supervisor(state: LabState, owned: bool, taint_master: bool = False) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "gtnb.targets.local.supervisor", "--state-dir", str(state.root)]
    if taint_master:
        argv.append("--taint-master")
    out = open(state.supervisor_out, "ab")
    try:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            # Its own session: a terminal's Ctrl-C reaches us, and we take the lab down in order.
            start_new_session=True,
            # Owned by a `with local_target()` block: the lab must not outlive this process.
            preexec_fn=set_pdeathsig if owned else None,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
    finally:
        out.close()
    _children[state.root] = popen
    return popen


def _wait_serving(state: LabState, popen: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    """Wait until the lab serves: supervisor up, rollout complete, HAProxy sees the pods UP."""
    deadline = time.monotonic() + timeout_s

    def left() -> float:
        return max(deadline - time.monotonic(), 1.0)

    def supervisor_ready() -> bool:
        if popen is not None and popen.poll() is not None:
            raise LabError(_failure(state, f"the lab supervisor exited with code {popen.returncode}"))
        record = state.read()
        if popen is not None and (not record or record.get("pid") != popen.pid):
            return False  # lab.json is still the previous lab's
        if not record:
            raise LabError(_failure(state, "lab.json disappeared while the lab was starting"))
        if record.get("status") in ("failed", "down"):
            raise LabError(_failure(state, f"the lab failed to start: {record.get('error')}"))
        if popen is None and not pid_alive(int(record.get("pid") or 0)):
            raise LabError(_failure(state, "the lab supervisor died while starting"))
        return record.get("status") == "serving"

    wait_until(supervisor_ready, timeout_s=left(), what=f"the lab supervisor in {state.root} to serve", interval_s=0.1, error=LabError)
    record = state.read() or {}
    cluster = LocalCluster(state.root, str(record["api"]))

    def rolled_out() -> bool:
        supervisor_ready()
        for pod in cluster.pods():
            if pod.reason and pod.reason.startswith("Error"):
                container = pod.reason.split()[2]
                raise LabError(
                    f"pod {pod.name}: {pod.reason}. Last lines of its log:\n"
                    + tail(state.container_log(pod.name, container))
                )
        rs = cluster.rollout_status()
        return rs.complete and all(p.ready for p in cluster.pods())

    wait_until(rolled_out, timeout_s=left(), what="the IGW pods to be Ready", interval_s=0.2, error=LabError)

    def haproxy_sees_pods() -> bool:
        rows = show_stat_rows(state.root)
        nodes = {p.node for p in cluster.pods() if p.node}
        # Exactly UP after a passing check: at start HAProxy shows "UP 1/3" with check INI.
        return bool(nodes) and all(
            rows.get(n, {}).get("status") == "UP" and rows[n].get("check_status") == "L7OK" for n in nodes
        )

    wait_until(haproxy_sees_pods, timeout_s=left(), what="HAProxy to mark the IGW pods' servers UP", interval_s=0.2, error=LabError)


def _failure(state: LabState, what: str) -> str:
    return f"{what}. Last lines of {state.supervisor_log}:\n{tail(state.supervisor_log)}\n{tail(state.supervisor_out, 5)}"


def lab_up(state_dir: str | Path | None = None, *, taint_master: bool = False) -> str:
    """Start a lab in `state_dir` (default `.lab/`) unless one runs there; return its status.

    Parameters:
        state_dir: the lab's state directory.
        taint_master: master1 takes no IGW pod, as on the seed's cluster (2 schedulable nodes).

    Returns:
        The text of `lab_status` once the lab serves.
    """
    state = LabState(resolve_state_dir(state_dir))
    if live_record(state) is not None:
        return "lab already up\n" + lab_status(state.root)
    t0 = time.monotonic()
    _attach_or_spawn(state, owned=False, taint_master=taint_master)
    return f"lab up in {time.monotonic() - t0:.1f}s\n" + lab_status(state.root)


# -- down ----------------------------------------------------------------------------------------


def _stop(state: LabState, popen: subprocess.Popen[bytes] | None = None) -> list[int]:
    """Stop the supervisor in `state` and wait until it and every lab process are gone.

    Returns:
        PIDs that had to be SIGKILLed after the supervisor left them behind (should be empty).
    """
    record = state.read()
    pids = all_pids(record)
    popen = popen or _children.get(state.root)
    sup_pid = popen.pid if popen is not None else int((record or {}).get("pid") or 0)
    if sup_pid and pid_alive(sup_pid):
        try:
            LocalCluster(state.root, str((record or {}).get("api"))).shutdown()
        except Exception:  # API gone or not up yet: a signal does the same
            try:
                os.kill(sup_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            wait_until(lambda: not pid_alive(sup_pid), timeout_s=DOWN_TIMEOUT_S, what="the supervisor to exit", error=LabError)
        except LabError:
            os.kill(sup_pid, signal.SIGKILL)
    if popen is not None:
        popen.wait(DOWN_TIMEOUT_S)
        _children.pop(state.root, None)
    pids |= all_pids(state.read())
    leftovers = [p for p in pids if p != sup_pid and _still_ours(p, state)]
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    last = state.read()
    if last and last.get("status") in ("starting", "serving") and not pid_alive(int(last.get("pid") or 0)):
        # The supervisor died without saying so (SIGKILL): record that the lab is down now.
        # No pids kept: they are gone, and a later lab down must not take their reusers for ours.
        state.write({**last, "status": "down", "pids": {},
                     "error": f"supervisor pid {last.get('pid')} died; cleaned up by lab down"})
    return leftovers


def _still_ours(pid: int, state: LabState) -> bool:
    """True for a live lab process; never for a stranger that reused the pid of a process a
    stale lab.json names (it started after the record was written)."""
    if not pid_alive(pid):
        return False
    try:
        proc = psutil.Process(pid)
        written = state.lab_json.stat().st_mtime
        return proc.create_time() <= written + 1.0 and proc.name() in _LAB_PROCESS_NAMES
    except (psutil.Error, OSError):
        return False


def lab_down(state_dir: str | Path | None = None) -> str:
    """Stop the lab in `state_dir` and wait until every one of its processes is gone.

    Returns:
        What was done, in one line.
    """
    state = LabState(resolve_state_dir(state_dir))
    record = state.read()
    if not record or not pid_alive(int(record.get("pid") or 0)):
        leftovers = _stop(state)
        return f"no lab running in {state.root}" + (f" (killed leftover pids {leftovers})" if leftovers else "")
    t0 = time.monotonic()
    leftovers = _stop(state)
    extra = f"; killed leftover pids {leftovers}" if leftovers else ""
    return f"lab {record.get('index')} down in {time.monotonic() - t0:.1f}s (state dir {state.root}){extra}"


# -- context manager -----------------------------------------------------------------------------


@contextmanager
def local_target(state_dir: str | Path | None = None, *, taint_master: bool = False) -> Iterator[LocalTarget]:
    """Yield the local lab as a Target for the duration of a block.

    Attaches to a lab already serving in `state_dir`; otherwise brings one up as a child of
    this process and takes it down when the block ends, however it ends.

    Parameters:
        state_dir: the lab's state directory (default `.lab/`).
        taint_master: for a lab brought up here: master1 takes no IGW pod (the seed's cluster).

    Returns:
        A context manager yielding a LocalTarget.
    """
    state = LabState(resolve_state_dir(state_dir))
    popen: subprocess.Popen[bytes] | None = None
    try:
        if live_record(state) is None:
            popen = _attach_or_spawn(state, owned=True, taint_master=taint_master)
        target = LocalTarget(state.root)
        try:
            yield target
        finally:
            target.close()
    finally:
        if popen is not None:
            _stop(state, popen)
