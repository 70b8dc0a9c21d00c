"""Image sideloading: the command sequence over a real sshd, with stand-ins for what is not here.

There is no Docker engine and no containerd on this machine, so:
- `docker` is a stand-in script (given to sideload() as its docker CLI) that records its argv and,
  for `save -o PATH IMAGE`, writes a small real tar holding the image's name;
- `ctr` is a stand-in script on the test sshd sessions' PATH: `image import FILE` keeps a copy of
  the uploaded FILE and records the name inside it, `images ls -q` lists what was imported under
  containerd's naming (docker.io/library/<name>).
The SSH path itself (upload through stdin, per-node sessions at 127.0.0.1/.2/.3, cleanup) is real.
One test calls the real docker CLI to show the message a user without a running engine gets.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from _homelab_fixtures import sshd  # noqa: F401 (pytest fixture)
from _sshd import Sshd, install_tool
from gtnb.config import HomelabProfile, parse_profile
from gtnb.errors import ConfigError, TargetError
from gtnb.images import build_images, containerd_name, sideload

pytestmark = pytest.mark.ssh

NODES = {"master1": "127.0.0.1", "worker1": "127.0.0.2", "worker2": "127.0.0.3"}

CTR = """#!/bin/sh
# ctr stand-in: records imports per node address (from $SSH_CONNECTION)
set -e
addr=$(echo "$SSH_CONNECTION" | cut -d' ' -f3)
rec={rec}
[ "$1" = -n ] && [ "$2" = k8s.io ] || {{ echo "ctr: namespace must be k8s.io, got $*" >&2; exit 3; }}
shift 2
if [ "$1 $2" = "image import" ]; then
  [ -f {rec}/fail-$addr ] && {{ echo "ctr: failed to import: content digest mismatch" >&2; exit 1; }}
  n=$(ls {rec} | grep -c "^upload-$addr-" || true)
  cp "$3" {rec}/upload-$addr-$n.tar
  echo "$3" >> {rec}/paths-$addr
  tar -xOf "$3" name.txt >> {rec}/images-$addr
  echo "unpacking $(tar -xOf "$3" name.txt)...done"
elif [ "$1 $2 $3" = "images ls -q" ]; then
  [ -f {rec}/images-$addr ] && sed 's|^|docker.io/library/|' {rec}/images-$addr || true
else
  echo "ctr stand-in: unexpected $*" >&2; exit 2
fi
"""

DOCKER = """#!/bin/sh
# docker stand-in: records argv; `save -o PATH IMAGE` writes a tar holding name.txt
echo "$*" >> {rec}/docker-calls
if [ "$1" = save ]; then
  d=$(mktemp -d)
  echo "$4" > "$d/name.txt"
  head -c 200000 /dev/urandom > "$d/layer.bin"
  tar -cf "$3" -C "$d" name.txt layer.bin
  rm -rf "$d"
fi
"""


@pytest.fixture
def rec(sshd: Sshd, tmp_path: Path) -> Iterator[Path]:
    r = tmp_path / "rec"
    r.mkdir()
    install_tool(sshd.bin_dir, "ctr", CTR.format(rec=r))
    yield r
    (sshd.bin_dir / "ctr").unlink()


@pytest.fixture
def docker(tmp_path: Path, rec: Path) -> str:
    return str(install_tool(tmp_path, "docker-standin", DOCKER.format(rec=rec)))


def _profile(sshd: Sshd) -> HomelabProfile:
    ssh = sshd.profile_ssh()
    return parse_profile({
        "kube": {"context": "homelab"},
        "balancer": {"ssh": {"host": "127.0.0.1", **ssh}},
        "frontend": {"host": "127.0.0.1"},
        "nodes": {"ssh": ssh, "sudo": False, "hosts": NODES},
    })


def test_build_save_copy_import_on_every_node(sshd: Sshd, rec: Path, docker: str) -> None:
    lines: list[str] = []
    done = sideload(_profile(sshd), docker=docker, progress=lines.append)
    assert done == {n: ["service-a-backend:dev", "service-a-hc:dev"] for n in NODES}
    calls = (rec / "docker-calls").read_text().splitlines()
    assert calls[0].startswith("build -f ") and calls[0].split()[2].endswith("images/backend/Dockerfile")
    assert calls[0].split()[3:5] == ["-t", "service-a-backend:dev"]
    assert calls[1].split()[2].endswith("images/hc/Dockerfile") and "service-a-hc:dev" in calls[1]
    assert [c.split()[0] for c in calls[2:]] == ["save", "save"]  # saved once, copied to each node
    for addr in NODES.values():
        assert (rec / f"images-{addr}").read_text().split() == ["service-a-backend:dev", "service-a-hc:dev"]
        # the bytes that arrived are the bytes docker saved: same archive on every node
        digests = {hashlib.sha256((rec / f"upload-{addr}-{i}.tar").read_bytes()).hexdigest() for i in (0, 1)}
        assert len(digests) == 2
        for path in (rec / f"paths-{addr}").read_text().split():
            assert not Path(path).exists()  # the uploaded tar was removed from the node's /tmp
    per_node = {hashlib.sha256((rec / f"upload-{a}-0.tar").read_bytes()).hexdigest() for a in NODES.values()}
    assert len(per_node) == 1
    assert any("worker2: importing service-a-hc:dev" in line for line in lines)


def test_import_failure_names_node_and_fix(sshd: Sshd, rec: Path, docker: str) -> None:
    (rec / "fail-127.0.0.2").touch()
    with pytest.raises(TargetError) as info:
        sideload(_profile(sshd), docker=docker, build=False)
    msg = str(info.value)
    assert "importing service-a-backend:dev on 127.0.0.2" in msg and "content digest mismatch" in msg
    assert "containerd" in msg
    assert not any(c.startswith("build") for c in (rec / "docker-calls").read_text().splitlines())


def test_unknown_node_and_missing_docker(sshd: Sshd, rec: Path) -> None:
    with pytest.raises(ConfigError, match="worker9"):
        sideload(_profile(sshd), nodes=["worker9"], build=False)
    with pytest.raises(ConfigError, match="not on PATH: install Docker"):
        build_images(docker="/nonexistent/docker")


@pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed")
def test_real_docker_cli_without_engine_says_so(tmp_path: Path) -> None:
    (tmp_path / "images" / "x").mkdir(parents=True)
    (tmp_path / "images" / "x" / "Dockerfile").write_text("FROM scratch\n")
    with pytest.raises(TargetError) as info:
        build_images(root=tmp_path, images={"gtnb-test-never-built:dev": "images/x/Dockerfile"})
    assert "building gtnb-test-never-built:dev failed" in str(info.value)
    assert "docker info" in str(info.value)


def test_containerd_names() -> None:
    assert containerd_name("service-a-hc:dev") == "docker.io/library/service-a-hc:dev"
    assert containerd_name("jinsoo/hc:dev") == "docker.io/jinsoo/hc:dev"
    assert containerd_name("203.0.113.2:5000/service-a-hc:dev") == "203.0.113.2:5000/service-a-hc:dev"
