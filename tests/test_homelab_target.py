"""open_target("homelab", profile=...) end to end on what runs here: a profile file on disk, the
kubernetes client pointed by its kubeconfig/context at the stub of the API contract
(tests/_kubestub.py; no API server can run here), the balancer over a real sshd to a real HAProxy,
and both committed HAProxy configs rendered with the target's values and installed through the
safe path (check, back up, reload, verify)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import yaml

from _kubestub import Stub
from _homelab_fixtures import node, sshd, stub  # noqa: F401 (pytest fixtures)
from _sshd import USER, Node, Sshd, free_port
from gtnb.certs import ensure_certs
from gtnb.haproxy_config import render_haproxy_config
from gtnb.targets import Target, open_target
from gtnb.targets.homelab import HomelabTarget

pytestmark = pytest.mark.ssh


def _profile_file(tmp_path: Path, sshd: Sshd, node: Node, stub: Stub) -> Path:
    _, pem = ensure_certs(tmp_path / "certs")
    ssh = sshd.profile_ssh()
    doc = {
        "kube": {"context": "stub", "kubeconfig": str(stub.kubeconfig)},
        "balancer": {"ssh": {"host": "127.0.0.1", "jump": f"{USER}@127.0.0.1:{sshd.port}", **ssh},
                     "sudo": False, "admin_socket": str(node.admin_sock), "config_path": str(node.cfg_path),
                     "reload_command": f"kill -USR2 {node.proc.pid}", "haproxy_bin": "/usr/sbin/haproxy",
                     "log_command": f"tail -F -n 0 {node.log_path}", "reload_timeout_s": 15},
        "frontend": {"host": "127.0.0.1", "port": node.frontend_port, "ca": str(tmp_path / "ca.pem")},
        "nodes": {"ssh": ssh, "sudo": False,
                  "hosts": {"master1": "127.0.0.1", "worker1": "127.0.0.2", "worker2": "127.0.0.3"}},
        # Homelab defaults would log to /dev/log and bind 6443: here stdout (the node's log file)
        # and a free port, so the committed configs can really run on the test HAProxy.
        "haproxy_values": {"GTNB_APISERVER": "127.0.0.1:6443", "GTNB_API_PORT": str(free_port()),
                           "GTNB_LOG_TARGET": "stdout", "GTNB_LOG_FORMAT": "iso", "GTNB_CERT": str(pem)},
    }
    p = tmp_path / "homelab.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def test_open_target_homelab_from_a_profile_file(tmp_path: Path, sshd: Sshd, node: Node, stub: Stub) -> None:
    profile = _profile_file(tmp_path, sshd, node, stub)
    # The jump host's own key must be known too: same sshd, so the same known_hosts line.
    with open_target("homelab", profile=profile) as target:
        assert isinstance(target, Target) and isinstance(target, HomelabTarget)
        assert target.name == "homelab"
        assert target.cluster.versions()["kubernetes"] == "v1.30.6"
        assert target.balancer.show_stat().startswith("# pxname")
        values = target.haproxy_values()
        assert values["GTNB_FRONTEND_ADDR"] == "127.0.0.1"
        assert values["GTNB_FRONTEND_PORT"] == str(node.frontend_port)
        assert values["GTNB_WORKER2_ADDR"] == "127.0.0.3"  # from nodes.hosts
        assert values["GTNB_ADMIN_SOCKET"] == str(node.admin_sock)
        assert values["GTNB_APISERVER"] == "127.0.0.1:6443"  # the profile wins
        for mode in ("current", "improved"):
            # exactly the variables the configs use; then the real safe install on the node
            text = render_haproxy_config(mode, values)
            assert not re.search(r"\$\{GTNB_[A-Z0-9_]+\}", text)
            assert target.balancer.install_config(text) == hashlib.sha256(text.encode()).hexdigest()
            assert node.cfg_path.read_text() == text
            assert ",worker2," in target.balancer.show_stat()
        offsets = target.clock_offsets_s()
        assert set(offsets) == {"haproxy", "master1", "worker1", "worker2"}
        # one clock: what is left is the method's error (the helper keeps it well under 1 ms,
        # benchmarks/ssh_balancer.md); the bound here only leaves room for a loaded machine
        assert all(abs(v) < 0.5 for v in offsets.values()), offsets
    # closed: the balancer's SSH transport is gone
    assert target.balancer._ssh._clients == []


def test_cli_preflight_on_homelab(tmp_path: Path, sshd: Sshd, node: Node, stub: Stub,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    from _kubestub import pod
    from _sshd import install_tool
    from gtnb.cli import main

    profile = _profile_file(tmp_path, sshd, node, stub)
    install_tool(sshd.bin_dir, "crictl", f'#!/bin/sh\ncat {tmp_path}/crictl.txt\n')
    try:
        (tmp_path / "crictl.txt").write_text("IMAGE TAG IMAGE-ID SIZE\ndocker.io/library/service-a-backend dev 1 1MB\n")
        stub.state.pods = {"igw-1": pod("igw-1", node="master1")}
        assert main(["preflight", "--target", "homelab", "--profile", str(profile)]) == 1
        out = capsys.readouterr().out
        assert "FAIL  images" in out and "lacks service-a-hc:dev" in out and "gtnb images sideload" in out
        (tmp_path / "crictl.txt").write_text("IMAGE TAG IMAGE-ID SIZE\ndocker.io/library/service-a-backend dev 1 1MB\n"
                                             "docker.io/library/service-a-hc dev 2 1MB\n")
        assert main(["preflight", "--target", "homelab", "--profile", str(profile)]) == 0
        assert "preflight on homelab: ok" in capsys.readouterr().out
    finally:
        (sshd.bin_dir / "crictl").unlink()


def test_cli_homelab_without_a_profile_file_says_what_to_do(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from gtnb.cli import main

    assert main(["preflight", "--target", "homelab", "--profile", str(tmp_path / "none.yaml")]) == 2
    assert "copy profiles/homelab.example.yaml" in capsys.readouterr().err


def test_a_homelab_run_records_every_hosts_clock_offset(tmp_path: Path, sshd: Sshd, node: Node, stub: Stub) -> None:
    # The run loop's `inspect` step, on the real homelab target (stub API, real sshd and HAProxy):
    # the journal gets the HAProxy node's offset *and* every node's (pods' lines are stamped by
    # their node), under the names the analysis looks up (`haproxy`, node names via pod_nodes).
    # Preflight then refuses this stub cluster (no IGW images), so the run stops before any change.
    from gtnb.errors import GtnbError
    from gtnb.scenarios import run

    profile = _profile_file(tmp_path, sshd, node, stub)
    with pytest.raises(GtnbError) as info:
        run("S1", "improved", target="homelab", profile=profile, artifacts=tmp_path / "artifacts", progress=False)
    run_dir = info.value.run_dir  # type: ignore[attr-defined]
    journal = yaml.safe_load((run_dir / "run.json").read_text())  # JSON is YAML
    assert journal["step"] == "preflight" and journal["status"] == "failed", journal
    offsets = journal["clock_offsets_s"]
    assert set(offsets) == {"haproxy", "master1", "worker1", "worker2"}, offsets
    assert all(isinstance(v, float) and abs(v) < 0.5 for v in offsets.values()), offsets
    # It failed before changing anything: nothing to restore, nothing waited for.
    assert journal["restored"]["unchanged"] is True and "restore_error" not in journal, journal
