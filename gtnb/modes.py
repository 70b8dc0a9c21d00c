"""A mode is three things kept in sync — the IGW manifest, the HAProxy config and the pods' `mode`
label — and `toggle()` puts a target into one, then proves the three agree.

The toggle speaks only the generic Target / Cluster / Balancer protocols, so the same steps run
on the local lab and on the homelab (KubeCluster + SshBalancer):

1. render `haproxy/haproxy-<mode>.cfg` with the target's values;
2. install it on the balancer (checked with `haproxy -c` first, then *reloaded*). This comes
   before the manifest on purpose: a config HAProxy refuses stops the toggle while nothing has
   changed yet, and either mode's config serves either mode's pods;
3. apply `manifests/2x-igw-<mode>.yaml`;
4. wait for the rollout; the seed's cluster deadlocks here (required anti-affinity +
   maxUnavailable 0 + pods == schedulable nodes, kubernetes#116891): new pods stay Pending
   while old-mode pods hold every seat. After a short settle time the toggle either
   force-deletes the old-mode pods with a 5 s grace period, as the seed does, or raises
   RolloutDeadlock with the seed's fix;
5. verify: every pod carries the mode label, the installed config's sha256 is the rendered
   one's, and HAProxy reports UP every server whose node has a Ready pod — and has checked every
   server since its reload (a fresh worker counts each server UP until its first check: a
   request sent to a node without a pod then got a 503 after 3 s of retries).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BalancerError, ConfigError, RolloutDeadlock, RolloutError
from .haproxy_stat import IGW_BACKEND, backend_servers, server_is_up, wait_servers_up
from .targets.base import Pod, RolloutStatus, Target
from .vocabulary import MODES, ensure_mode, other_mode

__all__ = [
    "MODES",
    "DEADLOCK_POLICIES",
    "FORCE_DELETE_GRACE_S",
    "IGW_BACKEND",
    "Mode",
    "ToggleResult",
    "ensure_mode",
    "ensure_deadlock_policy",
    "load_mode",
    "backend_servers",
    "server_is_up",
    "find_deadlock",
    "toggle",
]

DEADLOCK_POLICIES = ("force-delete", "report")
FORCE_DELETE_GRACE_S = 5.0  # the seed's `kubectl delete pod --grace-period=5`
DEADLOCK_AFTER_S = 5.0  # a Pending surge pod is normal for a moment; for this long it is stuck
VERIFY_TIMEOUT_S = 30.0  # HAProxy needs passing checks (current: inter 2 s) to see a pod UP
POLL_S = 0.25

DEADLOCK_FIX = (
    "required anti-affinity + maxUnavailable 0 + as many pods as schedulable nodes: the new pod has "
    "no node and no old pod may go (kubernetes#116891). Fix as the seed does: force-delete the "
    "old-mode pods (`kubectl -n service-a delete pod -l app=service-a-igw,mode={old} "
    "--grace-period=5`, or toggle with deadlock_policy='force-delete'); or untaint master1 for one "
    "more seat; or set maxUnavailable: 1"
)

log_ = logging.getLogger("gtnb.toggle")


def ensure_deadlock_policy(policy: object) -> str:
    """Return `policy` if it is a deadlock policy, else raise ConfigError naming the choices."""
    if policy not in DEADLOCK_POLICIES:
        raise ConfigError(
            f"deadlock_policy {policy!r} is not one of {', '.join(DEADLOCK_POLICIES)}: "
            "force-delete resolves it as the seed does, report raises RolloutDeadlock"
        )
    return str(policy)


@dataclass(frozen=True)
class Mode:
    """The files that define a mode, and its label."""

    name: str
    manifest: Path  # manifests/2X-igw-<mode>.yaml
    haproxy_cfg: Path  # haproxy/haproxy-<mode>.cfg

    @property
    def label(self) -> str:
        """The pods' label selector, as `kubectl -l` takes it."""
        return f"mode={self.name}"


def load_mode(name: str) -> Mode:
    """Return the Mode called `name`, its files checked to exist.

    Parameters:
        name: `current` or `improved`.

    Returns:
        A Mode. Raises ConfigError for an unknown name or a missing file.
    """
    from .haproxy_config import haproxy_config_path
    from .manifests import manifest_path

    ensure_mode(name)
    mode = Mode(name, manifest_path(name), haproxy_config_path(name))
    for path in (mode.manifest, mode.haproxy_cfg):
        if not path.is_file():
            raise ConfigError(f"mode {name}: {path} is missing: is the checkout complete?")
    return mode


def find_deadlock(pods: list[Pod], mode: str) -> tuple[list[Pod], list[Pod]]:
    """The rollout deadlock as the pods show it: (stuck new-mode pods, old-mode pods holding seats).

    Stuck = Pending with reason Unschedulable. Holding = not Terminating and of another mode. Both
    lists are empty when there is no deadlock. While any pod is Terminating it is no deadlock
    either: that pod still holds its node (anti-affinity counts it) but frees it by itself — a
    rollout out of improved mode waits on the old pods' preStop drain there, measured at 5-10 s.
    """
    if any(p.phase == "Terminating" for p in pods):
        return [], []
    stuck = [p for p in pods if p.mode == mode and p.phase == "Pending" and p.reason == "Unschedulable"]
    holding = [p for p in pods if p.mode != mode]
    return (stuck, holding) if stuck and holding else ([], [])


@dataclass(frozen=True)
class ToggleResult:
    """What a toggle did and what it verified."""

    mode: str
    target: str
    manifest_sha256: str
    cfg_sha256: str
    pods: tuple[str, ...]  # the mode's pods after the toggle
    servers_up: tuple[str, ...]  # HAProxy servers verified UP
    deleted: tuple[str, ...] = ()  # old-mode pods force-deleted to break the deadlock
    deadlock: bool = False
    timings_s: dict[str, float] = field(default_factory=dict)  # step -> seconds

    def __str__(self) -> str:
        forced = f"; deadlock resolved by force-deleting {', '.join(self.deleted)}" if self.deleted else ""
        return (
            f"{self.target} is in {self.mode} mode: {len(self.pods)} pod(s) labelled mode={self.mode}, "
            f"HAProxy UP on {', '.join(self.servers_up) or 'no server'}, manifest {self.manifest_sha256[:12]}, "
            f"haproxy cfg {self.cfg_sha256[:12]}{forced} ({self.timings_s.get('total', 0.0):.1f} s)"
        )


Log = Callable[[str], None]
Progress = Callable[[RolloutStatus], None]


def toggle(
    target: Target,
    mode: str,
    *,
    deadlock_policy: str | None = None,
    timeout_s: float | None = None,
    log: Log | None = None,
    progress: bool | Progress | None = None,
    deadlock_after_s: float = DEADLOCK_AFTER_S,
    verify_timeout_s: float = VERIFY_TIMEOUT_S,
) -> ToggleResult:
    """Put a target into a mode and verify that manifest, HAProxy config and pods agree.

    Parameters:
        target: any gtnb Target (local lab, homelab).
        mode: `current` or `improved`.
        deadlock_policy: `force-delete` (the seed's way out) or `report` (raise RolloutDeadlock);
            default: the target's `deadlock_policy` (a homelab profile's), else `force-delete`.
        timeout_s: how long the rollout may take; default: the target's `rollout_timeout_s`,
            else 180 s.
        log: called with each narrated line (a run's run.log); default: the `gtnb.toggle` logger.
        progress: a tqdm bar over the rollout (None/True), none (False), or a callable taking
            each new RolloutStatus.
        deadlock_after_s: how long new pods must stay Unschedulable before it counts as deadlock.
        verify_timeout_s: how long HAProxy may take to see the new pods UP.

    Returns:
        A ToggleResult (its str() is one line). Raises BalancerError (config refused or not
        installed as rendered; the running HAProxy untouched), RolloutDeadlock (policy `report`),
        RolloutError (rollout timeout, a pod without the mode label) or BalancerError (a server
        not UP).
    """
    m = load_mode(mode)
    if deadlock_policy is None:
        deadlock_policy = str(getattr(target, "deadlock_policy", None) or "force-delete")
    if timeout_s is None:
        timeout_s = float(getattr(target, "rollout_timeout_s", None) or 180.0)
    ensure_deadlock_policy(deadlock_policy)
    for name, value in (("timeout_s", timeout_s), ("deadlock_after_s", deadlock_after_s), ("verify_timeout_s", verify_timeout_s)):
        if not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"{name}={value!r} must be a number of seconds > 0")
    say: Log = log if log is not None else log_.info
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    say(f"toggle {target.name} to {mode} mode: manifest {m.manifest.name}, HAProxy {m.haproxy_cfg.name}, label {m.label}")

    cfg_sha = _install_cfg(target, m, say)
    timings["haproxy"] = time.monotonic() - t0

    from .manifests import manifest_sha256

    manifest_sha = manifest_sha256(m.manifest)
    t = time.monotonic()
    say(f"apply {m.manifest.name} (sha256 {manifest_sha[:12]})")
    try:
        target.cluster.apply(m.manifest)
    except Exception as exc:
        # Said, not hidden: HAProxy already runs the new mode's config, the pods do not yet.
        say(f"apply failed ({exc}): HAProxy runs {m.haproxy_cfg.name} while the pods keep their mode; "
            f"fix the cause and toggle to {mode} again")
        raise
    timings["apply"] = time.monotonic() - t

    t = time.monotonic()
    deleted = _wait_rollout(target, mode, deadlock_policy, timeout_s, deadlock_after_s, say, progress)
    timings["rollout"] = time.monotonic() - t

    t = time.monotonic()
    pods, up = _verify(target, mode, cfg_sha, verify_timeout_s, say)
    timings["verify"] = time.monotonic() - t
    timings["total"] = time.monotonic() - t0
    result = ToggleResult(
        mode=mode, target=target.name, manifest_sha256=manifest_sha, cfg_sha256=cfg_sha,
        pods=tuple(p.name for p in pods), servers_up=tuple(up), deleted=tuple(deleted),
        deadlock=bool(deleted), timings_s={k: round(v, 3) for k, v in timings.items()},
    )
    say(f"toggle done: {result}")
    return result


def _install_cfg(target: Target, m: Mode, say: Log) -> str:
    """Render the mode's config for this target and install it; return its sha256."""
    from .haproxy_config import render_haproxy_config

    text = render_haproxy_config(m.name, target.haproxy_values())
    sha = hashlib.sha256(text.encode()).hexdigest()
    say(f"haproxy: {m.haproxy_cfg.name} rendered for {target.name} (sha256 {sha[:12]}); check with `haproxy -c`, install, reload")
    try:
        installed = target.balancer.install_config(text)
    except BalancerError as exc:
        say(f"haproxy: config not installed, the manifest is not applied: {exc}")
        raise BalancerError(f"toggle to {m.name} stopped before applying the manifest: {exc}") from exc
    if installed != sha:
        raise BalancerError(
            f"the balancer installed a config with sha256 {installed[:12]}, not the rendered {m.haproxy_cfg.name} "
            f"({sha[:12]}): check who else writes the live config"
        )
    say(f"haproxy: reloaded with {m.haproxy_cfg.name} (sha256 {sha[:12]})")
    return sha


def _progress(progress: bool | Progress | None, mode: str) -> tuple[Callable[[RolloutStatus, int], None], Callable[[], None]]:
    """A sink taking (status, Ready pods of the mode) and its closer: a tqdm bar, nothing, or the
    caller's callable (which gets the status only)."""
    if callable(progress):
        user = progress
        return (lambda status, done: user(status)), lambda: None
    if progress is False:
        return (lambda status, done: None), lambda: None
    from tqdm.auto import tqdm

    bar: Any = tqdm(total=1, desc=f"rollout to {mode}", unit="pod", leave=False)

    def update(status: RolloutStatus, done: int) -> None:
        bar.total = max(status.desired, 1)
        bar.n = min(done, bar.total)  # status.ready counts old pods too
        bar.set_postfix_str(f"old {status.old}, pending {len(status.pending)}", refresh=False)
        bar.refresh()

    return update, bar.close


def _wait_rollout(
    target: Target, mode: str, policy: str, timeout_s: float, deadlock_after_s: float, say: Log,
    progress: bool | Progress | None,
) -> list[str]:
    """Wait until every pod is of the mode and Ready; break the deadlock per policy. Returns
    the names of the pods force-deleted."""
    cluster = target.cluster
    deadline = time.monotonic() + timeout_s
    stuck_since: float | None = None
    deleted: list[str] = []
    last: tuple[Any, ...] | None = None
    update, close = _progress(progress, mode)
    say(f"rollout: waiting for every pod to be {mode} and Ready (timeout {timeout_s:g} s)")
    try:
        while True:
            status = cluster.rollout_status()
            pods = cluster.pods()
            others = [p for p in pods if p.mode != mode]
            seen = (status, tuple(sorted((p.name, p.phase, p.ready) for p in pods)))
            if seen != last:
                update(status, sum(1 for p in pods if p.mode == mode and p.ready and p.phase == "Running"))
                say(f"rollout: {status.updated}/{status.desired} updated, {status.ready} ready, {status.old} old; pods "
                    + (", ".join(_describe(p) for p in pods) or "none"))
                last = seen
            if status.complete and not others and all(p.ready for p in pods):
                say(f"rollout: complete, {len(pods)} {mode} pod(s) Ready")
                return deleted
            stuck, holding = find_deadlock(pods, mode)
            now = time.monotonic()
            stuck_since = (stuck_since if stuck_since is not None else now) if stuck else None
            if stuck and now - stuck_since >= deadlock_after_s:
                _break_deadlock(cluster, mode, policy, stuck, holding, now - stuck_since, deleted, say)
                stuck_since = None
            if now >= deadline:
                raise RolloutError(
                    f"rollout to {mode} not complete after {timeout_s:g} s: {status}; pods "
                    f"{', '.join(_describe(p) for p in pods) or 'none'}. If new pods are Pending: "
                    + DEADLOCK_FIX.format(old=other_mode(mode))
                )
            time.sleep(POLL_S)
    finally:
        close()


def _break_deadlock(
    cluster: Any, mode: str, policy: str, stuck: list[Pod], holding: list[Pod], for_s: float,
    deleted: list[str], say: Log,
) -> None:
    old_mode = ", ".join(sorted({str(p.mode) for p in holding}))
    what = (
        f"rollout deadlock: {', '.join(p.name for p in stuck)} Pending (Unschedulable) for {for_s:.1f} s while "
        f"{old_mode}-mode pods {', '.join(f'{p.name} on {p.node}' for p in holding)} hold every seat"
    )
    if policy == "report":
        say(what + "; deadlock_policy=report: stopping")
        raise RolloutDeadlock(f"{what}. Fix: {DEADLOCK_FIX.format(old=old_mode)}")
    say(what + f"; force-deleting the {old_mode}-mode pods with grace {FORCE_DELETE_GRACE_S:g} s, as the seed "
        "does (required anti-affinity + maxUnavailable 0 + pods == nodes cannot roll otherwise)")
    for pod in holding:
        if pod.name not in deleted:
            cluster.delete_pod(pod.name, FORCE_DELETE_GRACE_S)
            deleted.append(pod.name)
            say(f"deleted {pod.name} (node {pod.node}, mode {pod.mode}) with grace {FORCE_DELETE_GRACE_S:g} s")


def _verify(target: Target, mode: str, cfg_sha: str, timeout_s: float, say: Log) -> tuple[list[Pod], list[str]]:
    """Check that pods, config and HAProxy agree; return (pods, servers UP)."""
    pods = target.cluster.pods()
    unlabelled = [p for p in pods if p.mode != mode]
    if unlabelled:
        raise RolloutError(
            f"verification failed: pods without label mode={mode}: "
            + ", ".join(f"{p.name} (mode={p.mode})" for p in unlabelled)
            + f". Toggle again, or delete them (`kubectl -n service-a delete pod <name>`)"
        )
    installed = target.balancer.installed_sha256()
    if installed != cfg_sha:
        raise BalancerError(
            f"verification failed: HAProxy's installed config has sha256 {installed[:12]}, the rendered "
            f"haproxy-{mode}.cfg {cfg_sha[:12]}: someone changed it meanwhile; toggle again"
        )
    expected = sorted({str(p.node) for p in pods if p.ready and p.phase == "Running" and p.node})
    say(f"verify: {len(pods)} pod(s) labelled mode={mode}; installed config sha256 {cfg_sha[:12]} as rendered; "
        f"waiting for HAProxy to see {', '.join(expected) or 'no server'} UP")
    servers = wait_servers_up(target.balancer, expected, timeout_s=timeout_s, backend=IGW_BACKEND)
    say("verify: HAProxy sees " + ", ".join(f"{n} {servers[n]['status']}" for n in expected)
        + "; every server checked since the reload")
    return pods, expected


def _describe(p: Pod) -> str:
    where = p.node or p.reason or "unscheduled"
    return f"{p.name} {p.mode} {p.phase}{' Ready' if p.ready else ''} ({where})"
