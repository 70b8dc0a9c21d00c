"""Preflight: the seed's four checks before a run, one line each with what was seen and the fix.

1. nodes Ready (and their kubelet version), 2. istiod Running, 3. the HAProxy backend servers'
states, 4. both workload images on every node (`crictl images` over SSH). On the local target the
checks that have no local meaning say "n/a on local" instead of failing, since the notebooks run
the same cell on both targets.
"""

from __future__ import annotations

import csv
import html
import io
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import GtnbError, PreflightError
from .targets.base import Target

__all__ = ["Check", "PreflightResult", "preflight", "require_preflight", "FIXES", "BACKEND"]

log = logging.getLogger("gtnb.preflight")

BACKEND = "istio-http-backend"
# The seed's troubleshooting table (and its preflight comments), as gtnb says them.
FIXES = {
    "nodes": "a node is not Ready: `kubectl describe node <node>` and `systemctl status kubelet` on it; "
             "the seed's lab runs v1.30.6 on master1/worker1/worker2",
    "istiod": "istiod is not 1/1 Running: `kubectl -n istio-system get pod` and `kubectl -n istio-system logs "
              "deploy/istiod`; without istiod the IGW's Envoy gets no config (SDS errors, pod 0/2)",
    "haproxy": "HAProxy server DOWN (e.g. L4TOUT) on a node with an IGW pod: the hc container is not ready or "
               "the pod is not serving. Check the EndpointSlice's ready state, image pulls and the "
               "readinessProbe (`kubectl -n service-a describe pod <pod>`); DOWN is fine where no IGW pod runs",
    "images": "image missing on a node (pods would hit ErrImagePull from the HTTP registry): sideload them with "
              "`gtnb images sideload --profile profiles/homelab.yaml` (docker save, copy, `ctr -n k8s.io image import` "
              "on each node)",
}


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "pass" | "fail" | "n/a"
    seen: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "fail"


@dataclass(frozen=True)
class PreflightResult:
    target: str
    checks: tuple[Check, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def __str__(self) -> str:
        lines = [f"preflight on {self.target}: {'ok' if self.ok else 'FAILED'}"]
        for c in self.checks:
            lines.append(f"  {c.status.upper():4}  {c.name:8}  {c.seen}")
            if c.status == "fail":
                lines.append(f"        fix: {c.fix}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        colour = {"pass": "#1a7f37", "fail": "#cf222e", "n/a": "#6e7781"}
        rows = "".join(
            f"<tr><td style='color:{colour[c.status]};font-weight:bold'>{c.status.upper()}</td>"
            f"<td>{html.escape(c.name)}</td><td>{html.escape(c.seen)}</td>"
            f"<td>{html.escape(c.fix) if c.status == 'fail' else ''}</td></tr>"
            for c in self.checks
        )
        verdict = "ok" if self.ok else "FAILED"
        return (f"<table><caption>preflight on {html.escape(self.target)}: {verdict}</caption>"
                f"<tr><th>result</th><th>check</th><th>seen</th><th>fix</th></tr>{rows}</table>")

    def raise_for_failure(self) -> None:
        """Raise PreflightError listing the failed checks and their fixes."""
        failed = [c for c in self.checks if c.status == "fail"]
        if failed:
            raise PreflightError(
                f"preflight on {self.target} failed: "
                + "; ".join(f"{c.name}: {c.seen} (fix: {c.fix})" for c in failed)
                + ". Fix these, or start the run with preflight skipped if you know better"
            )


def preflight(target: Target, *, expected_version: str | None = None) -> PreflightResult:
    """Run the seed's four checks on a target.

    Parameters:
        target: an open Target (local or homelab).
        expected_version: the kubelet version every node must run (e.g. "v1.30.6"); default the
            profile's kube.expected_version; None accepts any version as long as the nodes agree.

    Returns:
        The PreflightResult: `.ok`, one Check per line, printable and shown as a table in notebooks.
    """
    profile = getattr(target, "profile", None)
    if expected_version is None and profile is not None:
        expected_version = profile.kube.expected_version
    checks = (
        _guard("nodes", lambda: _nodes(target, expected_version)),
        _guard("istiod", lambda: _istiod(target)),
        _guard("haproxy", lambda: _haproxy(target)),
        _guard("images", lambda: _images(target)),
    )
    result = PreflightResult(target.name, checks)
    for c in checks:
        log.info("preflight %s: %s %s", c.name, c.status, c.seen)
    return result


def require_preflight(target: Target, *, skip: bool = False) -> PreflightResult | None:
    """Preflight before a run: raise PreflightError when it fails, unless told to skip it."""
    if skip:
        log.warning("preflight skipped on %s: the run starts without the seed's four checks", target.name)
        return None
    result = preflight(target)
    result.raise_for_failure()
    return result


def _guard(name: str, check: Any) -> Check:
    """A check that cannot even look (SSH down, API unreachable) fails with what went wrong."""
    try:
        return check()
    except GtnbError as exc:
        return Check(name, "fail", f"could not check: {exc}", FIXES[name])


def _nodes(target: Target, expected: str | None) -> Check:
    nodes = target.cluster.nodes()
    if not nodes:
        return Check("nodes", "fail", "no nodes", FIXES["nodes"])
    seen = ", ".join(f"{n.name} {'Ready' if n.ready else 'NotReady'} {n.version}".strip() for n in nodes)
    versions = {n.version for n in nodes}
    bad = [n.name for n in nodes if not n.ready]
    if expected and versions != {expected}:
        return Check("nodes", "fail", f"{seen} (expected {expected})", FIXES["nodes"])
    if bad or len(versions) > 1:
        return Check("nodes", "fail", seen + ("" if not bad else f"; not Ready: {', '.join(bad)}"), FIXES["nodes"])
    return Check("nodes", "pass", seen)


def _istiod(target: Target) -> Check:
    istiod = getattr(target.cluster, "istiod_pods", None)
    if istiod is None:
        return Check("istiod", "n/a", f"n/a on {target.name} (no Istio control plane; the agent stands in)")
    pods = istiod()
    if not pods:
        return Check("istiod", "fail", "no istiod pod (label app=istiod)", FIXES["istiod"])
    seen = ", ".join(f"{p['name']} {p['ready']} {p['phase']}" for p in pods)
    good = [p for p in pods if p["phase"] == "Running" and _all_ready(p["ready"])]
    return Check("istiod", "pass" if good else "fail", seen, "" if good else FIXES["istiod"])


def _all_ready(ready: str) -> bool:
    have, _, want = ready.partition("/")
    return have == want and want not in ("", "0")


def _haproxy(target: Target) -> Check:
    text = target.balancer.show_stat().lstrip()
    rows = [r for r in csv.DictReader(io.StringIO(text[2:] if text.startswith("# ") else text))
            if r.get("pxname") == BACKEND and r.get("svname") not in ("FRONTEND", "BACKEND")]
    if not rows:
        return Check("haproxy", "fail", f"backend {BACKEND} has no servers in show stat", FIXES["haproxy"])
    serving = {p.node for p in target.cluster.pods() if p.phase == "Running" and p.ready and p.node}
    parts, bad = [], []
    for r in rows:
        state = r.get("status", "")
        detail = f"{r['svname']}={state}"
        if r.get("check_status") and not state.startswith("UP"):
            detail += f" ({r['check_status']})"
        if r["svname"] in serving and not state.startswith("UP"):
            bad.append(r["svname"])
            detail += " <- has a ready IGW pod"
        parts.append(detail)
    seen = ", ".join(parts)
    if bad:
        return Check("haproxy", "fail", seen, FIXES["haproxy"])
    return Check("haproxy", "pass", seen + ("" if serving else " (no ready IGW pod yet)"))


def _images(target: Target) -> Check:
    session_for = getattr(target, "node_session", None)
    profile = getattr(target, "profile", None)
    if session_for is None or profile is None:
        return Check("images", "n/a", f"n/a on {target.name} (workloads run as processes, no images)")
    if not profile.nodes:
        return Check("images", "fail", f"no nodes listed under nodes.hosts in {profile.path}",
                     "add every node's SSH address under nodes.hosts in the profile")
    missing: list[str] = []
    seen: list[str] = []
    for node in profile.nodes:
        with session_for(node) as s:
            r = s.run("crictl images", sudo=profile.node_sudo, timeout_s=30)
        if not r.ok:
            missing.append(f"{node}: crictl failed ({r.output()[:120]})")
            continue
        present = _listed_images(r.stdout)
        lacks = [i for i in profile.images if not _has(present, i)]
        if lacks:
            missing.append(f"{node} lacks {', '.join(lacks)}")
        seen.append(f"{node} {len(profile.images) - len(lacks)}/{len(profile.images)}")
    if missing:
        return Check("images", "fail", "; ".join(missing), FIXES["images"])
    return Check("images", "pass", f"{', '.join(profile.images)} on " + ", ".join(seen))


def _listed_images(crictl_out: str) -> set[tuple[str, str]]:
    """(repository, tag) pairs from `crictl images` (columns IMAGE TAG IMAGE-ID SIZE)."""
    out = set()
    for line in crictl_out.splitlines()[1:]:
        cols = re.split(r"\s+", line.strip())
        if len(cols) >= 2:
            out.add((cols[0], cols[1]))
    return out


def _has(present: set[tuple[str, str]], image: str) -> bool:
    """`service-a-hc:dev` matches docker.io/library/service-a-hc dev, as ctr import names it."""
    name, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "latest")
    return any((repo == name or repo.endswith("/" + name)) and t == tag for repo, t in present)
