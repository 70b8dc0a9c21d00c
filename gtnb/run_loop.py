"""The one loop every scenario runs, with its journal, its lock and its clean-up.

Every step is written to run.json before it starts, so an interruption leaves a journal that says
where the run stopped. Whatever happens — an exception, Ctrl-C, SIGTERM — the traffic is
cancelled, the collectors are stopped, what was measured is written, and a run that did not
complete puts the lab back in the mode and replica count it had before.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from .artifacts import REPO_ROOT, Journal, LabLock, artifacts_root, lab_lock_path, new_run_dir
from .collect import Collectors, RunLog, parse_show_stat
from .down_wait import file_sizes, wait_down_collected
from .errors import RunError
from .haproxy_stat import backend_servers, unsettled
from .manifests import manifest_path
from .mode_timings import mode_timings
from .run_traffic import RunTraffic
from .scenarios import Scenario
from .targets import open_target
from .targets.base import Balancer, Cluster, Pod, Target
from .traffic import Pin

__all__ = ["execute", "BACKEND", "lab_mode"]

BACKEND = "istio-http-backend"  # HAProxy's backend of IGW servers; servers are named after nodes
_TICK_S = 0.1
DOWN_WAIT_S = 10.0  # after the killed pod is gone: how long to keep collecting for HAProxy's DOWN


def execute(
    scenario: Scenario,
    mode: str,
    params: dict[str, Any],
    *,
    target: str,
    profile: str | Path | None,
    state_dir: str | Path | None,
    artifacts: str | Path | None,
    progress: bool,
) -> Path:
    """Lock the lab, open the target and run the loop (see `gtnb.scenarios.run`)."""
    lab_id = profile if target != "local" else (state_dir or REPO_ROOT / ".lab")
    lock = LabLock(lab_lock_path(target, lab_id), f"{target} lab {lab_id}")
    # Locked before anything touches the lab: a refused run changes nothing and writes nothing.
    lock.acquire()
    try:
        # The run directory and its journal come before the target: a lab that will not open is
        # a failed run with a journal saying so, like any other step.
        run_dir = new_run_dir(scenario.name, mode, artifacts_root(artifacts))
        lock.note(run_dir)
        runner = _Run(scenario, mode, params, target, run_dir, progress)
        with _sigterm_as_interrupt():
            return runner.execute(lambda: open_target(target, profile=profile, state_dir=state_dir))
    finally:
        lock.release()


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """`kill <pid>` gets the same clean-up as Ctrl-C (only possible in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def lab_mode(pods: list[Pod]) -> str | None:
    """The mode the lab's live pods agree on, or None (no pods, or mixed modes)."""
    modes = {p.mode for p in pods if p.phase != "Terminating"}
    return modes.pop() if len(modes) == 1 else None


def _servers(target: Target) -> dict[str, tuple[str, int]]:
    """HAProxy's view of the IGW servers: {server: (status, current sessions)}."""
    header, rows = parse_show_stat(target.balancer.show_stat())
    ix = {name: i for i, name in enumerate(header)}
    out: dict[str, tuple[str, int]] = {}
    for row in rows:
        if row[ix["pxname"]] == BACKEND and row[ix["svname"]] not in ("FRONTEND", "BACKEND"):
            scur = row[ix["scur"]]
            out[row[ix["svname"]]] = (row[ix["status"]], int(scur) if scur.isdigit() else 0)
    return out


class _Run:
    target: Target
    cluster: Cluster
    balancer: Balancer

    def __init__(self, scenario: Scenario, mode: str, params: dict[str, Any], target_name: str,
                 run_dir: Path, progress: bool) -> None:
        self.sc, self.mode, self.params = scenario, mode, params
        self.run_dir, self.progress = run_dir, progress
        self.finished = False
        self.changed = False  # set once the run starts changing the lab (its toggle step)
        self.journal = Journal(run_dir, target=target_name, scenario=scenario.name, mode=mode, parameters=params)
        self.runlog = RunLog(run_dir / "run.log", echo=_echo if progress else None)
        self.collectors: Collectors | None = None
        self.traffic: RunTraffic | None = None
        self.down_since: tuple[str, dict[str, int]] | None = None  # killed pod's node, file sizes at the kill
        self.client_written = False

    # -- the loop ------------------------------------------------------------------------------

    def execute(self, opener: Callable[[], AbstractContextManager[Target]]) -> Path:
        self.runlog(f"run {self.sc.name} ({self.sc.title}) in {self.mode} mode -> {self.run_dir}")
        try:
            self._step("open_target")
            with opener() as target:
                self.target, self.cluster, self.balancer = target, target.cluster, target.balancer
                return self._loop()
        except BaseException as exc:
            exc.run_dir = self.run_dir  # type: ignore[attr-defined]
            if not self.finished:  # the target did not even open: nothing to clean up
                self._finish(*self._describe(exc))
            raise

    def _describe(self, exc: BaseException) -> tuple[str, str]:
        if isinstance(exc, KeyboardInterrupt):
            return "aborted", f"interrupted ({str(exc) or 'Ctrl-C / SIGINT'}) at step {self.journal.data['step']}"
        return "failed", f"{type(exc).__name__}: {exc}"

    def _loop(self) -> Path:
        status, error = "failed", None
        before: tuple[str | None, int] | None = None
        try:
            self._step("inspect")
            pods = self.cluster.pods()
            before = (lab_mode(pods), self.cluster.rollout_status().desired)
            self.journal.update(lab_before={"mode": before[0], "replicas": before[1]})
            self.journal.update(versions={**self.cluster.versions(), **self.balancer.versions()},
                                clock_offsets_s=self._clock_offsets())
            if getattr(self.target, "name", "local") != "local":
                # The homelab is someone's cluster: the seed's four checks come before any change.
                from .preflight import require_preflight

                self._step("preflight")
                result = require_preflight(self.target)
                self.runlog(f"preflight: {result}")
            self._step("toggle")
            self.changed = True
            self._toggle(self.mode)
            self._step("scale")
            self._scale_and_wait(self.params["replicas"])
            self._step("collect")
            self.collectors = Collectors(self.cluster, self.balancer, self.run_dir, runlog=self.runlog,
                                         stat_interval_s=self.params["stat_interval_s"])
            self.collectors.start()
            self._step("traffic")
            self.traffic = RunTraffic(self.sc, self.params, Pin.from_frontend(self.balancer.frontend()))
            self.runlog(f"traffic: {self.traffic.describe}")
            started = time.monotonic()
            self.traffic.start()
            with self._bar() as bar:
                self._wait(lambda: time.monotonic() - started >= self.params["kill_after_s"], bar, started)
                self._step("terminate")
                self._terminate()
                self._step("wait_traffic")
                limit = self.params["duration_s"] + self.params["timeout_margin_s"] + 10
                if not self._wait(lambda: self.traffic.done, bar, started, limit=limit):  # type: ignore[union-attr]
                    raise RunError(f"the traffic did not end within {limit:g} s of its start")
            self.runlog(f"traffic ended: {self.traffic.summary()}")
            self._write_client()
            self._step("wait_pod_gone")
            self._wait_termination_done()
            self._wait_down_collected()
            self._step("stop_collectors")
            self._stop_collectors()
            self._step("write_artifacts")
            self._write_client()
            status = "completed"
            self.runlog(f"run completed: {self.run_dir}")
            return self.run_dir
        except BaseException as exc:
            status, error = self._describe(exc)
            raise
        finally:
            self._cleanup(status, error, before)

    def _step(self, name: str) -> None:
        self.journal.step(name)

    def _clock_offsets(self) -> dict[str, float]:
        # The homelab measures every host (nodes stamp the pods' log lines); the local lab has
        # one clock, and the balancer's offset is all the protocol offers.
        every_host = getattr(self.target, "clock_offsets_s", None)
        if callable(every_host):
            return dict(every_host())
        return {"haproxy": self.balancer.clock_offset_s()}

    # -- steps ---------------------------------------------------------------------------------

    def _toggle(self, mode: str, *, restoring: bool = False) -> None:
        from .modes import toggle

        result = toggle(self.target, mode, log=self.runlog, progress=self.progress and not restoring)
        if restoring:
            return  # the journal keeps the sha256 of the run's own mode
        sha = {"manifest": result.manifest_sha256, "haproxy_cfg": result.cfg_sha256}
        self.journal.update(sha256=sha)
        # The analysis bounds S2 with these (docs/contracts.md): the config and manifest in use,
        # not the defaults it falls back to.
        timings = mode_timings(mode, self.target.haproxy_values(), result.cfg_sha256)
        self.journal.update(parameters={**self.journal.data["parameters"], **timings})
        self.runlog("timings in use: " + ", ".join(f"{k} {v:g}" for k, v in timings.items())
                    + f" (haproxy-{mode}.cfg as installed, {manifest_path(mode).name})")

    def _scale_and_wait(self, replicas: int) -> None:
        self.runlog(f"scale to {replicas} replica{'s' if replicas != 1 else ''} and wait until HAProxy sees them UP")
        self.cluster.scale(replicas)
        deadline = time.monotonic() + self.params["ready_timeout_s"]
        while True:
            pods = self.cluster.pods()
            live = [p for p in pods if p.phase == "Running" and p.ready and p.mode == self.mode]
            # Exactly the run's pods' servers UP, every other DOWN, all checked since the reload:
            # else round robin can send the request to a pod that is not the one killed.
            wrong = unsettled(backend_servers(self.balancer.show_stat(), BACKEND), {str(p.node) for p in live})
            if len(live) == replicas and len(pods) == replicas and not wrong:
                self.runlog("ready: " + ", ".join(f"{p.name} on {p.node} (UP)" for p in live)
                            + "; every other HAProxy server DOWN")
                return
            if time.monotonic() >= deadline:
                raise RunError(
                    f"the lab was not ready within {self.params['ready_timeout_s']:g} s: want {replicas} "
                    f"Running+Ready {self.mode} pod(s) and nothing else, HAProxy UP on their nodes and DOWN "
                    f"elsewhere; have pods {[(p.name, p.phase, p.ready, p.mode, p.node) for p in pods]}, "
                    f"HAProxy: {'; '.join(wrong) or 'as wanted'}. Check `gtnb lab status`, or raise ready_timeout_s"
                )
            time.sleep(0.2)

    def _terminate(self) -> None:
        if self.sc.event == "rollout_restart":
            self.runlog("termination event: rollout restart")
            self.cluster.rollout_restart()
            self.journal.update(killed_pod=None, event_at=time.time())
            return
        pod = self._serving_pod()
        grace = self.params["grace_period_s"]
        self.runlog(f"termination event: delete pod {pod.name} on {pod.node} (grace period {grace:g} s)")
        self.down_since = (str(pod.node), file_sizes(self.run_dir))  # look for its DOWN from here on
        self.cluster.delete_pod(pod.name, grace)
        self.journal.update(killed_pod=pod.name, event_at=time.time())

    def _serving_pod(self) -> Pod:
        """The pod whose node HAProxy is sending the traffic to (with one replica: the pod)."""
        pods = [p for p in self.cluster.pods() if p.phase == "Running"]
        busy = {name for name, (_, scur) in _servers(self.target).items() if scur > 0}
        serving = [p for p in pods if p.node in busy] or [p for p in pods if p.ready]
        if not serving:
            raise RunError("no Running IGW pod to delete: the lab lost its pod before the termination event")
        if len(serving) > 1:
            self.runlog(f"several pods serve traffic ({', '.join(p.name for p in serving)}): deleting the first")
        return serving[0]

    def _wait_termination_done(self) -> None:
        limit = self.params["pod_gone_timeout_s"]
        killed = self.journal.data.get("killed_pod")
        if killed:
            what = f"pod {killed} to be gone"
            cond: Callable[[], bool] = lambda: killed not in {p.name for p in self.cluster.pods()}
        else:
            what = "the rollout to complete"
            cond = lambda: self.cluster.rollout_status().complete and all(
                p.phase != "Terminating" for p in self.cluster.pods())
        self.runlog(f"waiting for {what}")
        started = time.monotonic()
        while not cond():
            if time.monotonic() - started >= limit:
                raise RunError(f"timed out after {limit:g} s waiting for {what}; raise pod_gone_timeout_s")
            time.sleep(0.2)
        self.runlog(f"{what.replace(' to be ', ' is ').replace(' to complete', ' completed')} "
                    f"after {time.monotonic() - started:.1f} s")

    def _wait_down_collected(self) -> None:
        """Keep collecting until haproxy.log and stat.csv show the killed pod's server DOWN:
        the pod can be gone before HAProxy's last failed check, and a run without it has no E2."""
        if self.down_since is None or self.collectors is None:
            return
        node, since = self.down_since
        seen, waited = wait_down_collected(self.run_dir, node, since, timeout_s=DOWN_WAIT_S, backend=BACKEND)
        if all(seen.values()):
            if waited >= 0.2:
                self.runlog(f"HAProxy's DOWN of {node} collected {waited:.1f} s after the pod was gone")
            return
        missing = " and ".join(name for name, ok in seen.items() if not ok)
        self.runlog(f"HAProxy did not report {node} DOWN in {missing} within {DOWN_WAIT_S:g} s of the pod "
                    "being gone: stopping the collectors anyway (the analysis will miss LB_DOWN)")

    def _stop_collectors(self) -> None:
        if self.collectors is None or not self.collectors.started:
            return
        collectors, self.collectors = self.collectors, None
        summary = collectors.stop()
        self.journal.update(stat_interval_s=summary["stat_interval_s"], stat_jitter_s=summary["stat_jitter_s"],
                            pod_nodes=summary["pod_nodes"],
                            collected={k: summary[k] for k in ("lines", "pods", "errors", "cpu_s")})

    def _write_client(self) -> None:
        if self.traffic is not None:
            rows = self.traffic.write(self.run_dir)
            if not self.client_written:
                self.runlog(f"client.csv: {rows} request{'s' if rows != 1 else ''}")
            self.client_written = True

    # -- waiting with progress -----------------------------------------------------------------

    @contextmanager
    def _bar(self) -> Iterator[Any]:
        # The text bar even in Jupyter: collector threads narrate through tqdm.write while the
        # bar refreshes, and the notebook widget bar is not safe against that (seen here:
        # AttributeError 'container'); the text bar serialises both under tqdm's own lock.
        from tqdm import tqdm

        total = self.params["duration_s"]
        bar = tqdm(total=total, unit="s", desc=f"{self.sc.name} {self.mode}", disable=not self.progress,
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s{postfix}", file=sys.stderr)
        try:
            yield bar
        finally:
            bar.close()

    def _wait(self, cond: Callable[[], bool], bar: Any, started: float, limit: float | None = None) -> bool:
        while not cond():
            elapsed = time.monotonic() - started
            if limit is not None and elapsed >= limit:
                return False
            bar.n = min(elapsed, bar.total)
            if self.traffic is not None:
                bar.set_postfix_str(self.traffic.progress(), refresh=False)
            bar.refresh()
            time.sleep(_TICK_S)
        return True

    # -- clean-up ------------------------------------------------------------------------------

    def _cleanup(self, status: str, error: str | None, before: tuple[str | None, int] | None) -> None:
        try:
            if self.traffic is not None and not self.traffic.done:
                self.traffic.cancel()
                self.traffic.join(10)
            self._stop_collectors()
            self._write_client()
            if status != "completed" and before is not None and not self.changed:
                # Failed before its first change (e.g. preflight): the lab is as it was; waiting
                # for it to "come back" could only time out on a lab that was not ready before.
                self.journal.update(restored={"mode": before[0], "replicas": before[1], "unchanged": True})
                self.runlog("nothing to restore: the run failed before changing the lab")
            elif status != "completed" and before is not None:
                self._restore(*before)
        except BaseException as exc:  # keep going: the journal must still be closed
            self.journal.update(cleanup_error=f"{type(exc).__name__}: {exc}")
        finally:
            self._finish(status, error)

    def _finish(self, status: str, error: str | None) -> None:
        if status != "completed":
            self.runlog(f"run {status}: {error}")
        self.journal.finish(status, error)
        self.runlog.close()
        self.finished = True

    def _restore(self, mode: str | None, replicas: int) -> None:
        self.runlog(f"restoring the lab to mode {mode or '(unchanged)'}, {replicas} replica(s)")
        try:
            pods = self.cluster.pods()
            if mode is not None and lab_mode(pods) != mode:
                self._toggle(mode, restoring=True)
            self.cluster.scale(replicas)
            deadline = time.monotonic() + self.params["ready_timeout_s"]
            while len([p for p in self.cluster.pods() if p.phase == "Running" and p.ready]) != replicas:
                if time.monotonic() >= deadline:
                    raise RunError(f"the lab did not come back to {replicas} ready pod(s) in time")
                time.sleep(0.2)
            restored = {"mode": mode, "replicas": replicas}
            self.journal.update(restored=restored)
            self.runlog(f"lab restored: {restored}")
        except BaseException as exc:
            self.journal.update(restore_error=f"{type(exc).__name__}: {exc}")
            self.runlog(f"restoring the lab failed: {type(exc).__name__}: {exc}")


def _echo(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"gtnb: {message}", file=sys.stderr)
