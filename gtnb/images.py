"""Build the two workload images and sideload them into every node's containerd.

The seed's fix for `ErrImagePull` from an HTTP registry (the nodes' containerd insists on HTTPS):
skip the registry. `docker build` here, `docker save` to a tar, copy it over SSH to each node,
`ctr -n k8s.io image import` there (the namespace the kubelet's CRI uses), and check that
containerd lists the image afterwards.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from .config import HomelabProfile, load_profile
from .errors import ConfigError, TargetError
from .targets.ssh_session import SshSession

__all__ = ["IMAGES", "REPO_ROOT", "build_images", "save_image", "sideload_archive", "sideload", "containerd_name"]

log = logging.getLogger("gtnb.images")

REPO_ROOT = Path(__file__).resolve().parents[1]
# image -> its Dockerfile (built from the repo root: the images COPY gtnb/ and pyproject.toml)
IMAGES = {
    "service-a-backend:dev": "images/backend/Dockerfile",
    "service-a-hc:dev": "images/hc/Dockerfile",
}
UPLOAD_TIMEOUT_S = 1800.0  # a few hundred MB through a jump host on a home network


def containerd_name(image: str) -> str:
    """The name `ctr import` gives a `docker save`d image: docker.io/library/<name> for short names."""
    first = image.split("/", 1)[0]
    if "/" not in image:
        return f"docker.io/library/{image}"
    if "." not in first and ":" not in first and first != "localhost":
        return f"docker.io/{image}"
    return image


def _docker(docker: str) -> str:
    found = shutil.which(docker)
    if not found:
        raise ConfigError(f"`{docker}` is not on PATH: install Docker (the CLI and a running engine) on this "
                          f"machine to build and save the images")
    return found


def _run(argv: Sequence[str], what: str, fix: str) -> None:
    log.info("%s: %s", what, shlex.join(argv))
    proc = subprocess.run(list(argv), capture_output=True, text=True)
    if proc.returncode != 0:
        # The tool's last lines say why (docker prints deprecation chatter first).
        out = " | ".join((proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:])[-800:]
        raise TargetError(f"{what} failed (exit {proc.returncode}): {out}. {fix}")


_ENGINE_FIX = "Is the Docker engine running (`docker info`)? Start it, or build on a machine that has one"


def build_images(*, docker: str = "docker", root: Path = REPO_ROOT,
                 images: dict[str, str] | None = None) -> list[str]:
    """`docker build -f images/<x>/Dockerfile -t <image> <repo root>` for each workload image.

    Parameters:
        docker: the docker CLI to call.
        root: the build context (the repo root).
        images: image -> Dockerfile path relative to root (default IMAGES).

    Returns:
        The images built.
    """
    exe = _docker(docker)
    images = IMAGES if images is None else images
    for image, dockerfile in images.items():
        if not (root / dockerfile).is_file():
            raise ConfigError(f"{dockerfile} does not exist under {root}: run from a gtnb checkout")
        _run([exe, "build", "-f", str(root / dockerfile), "-t", image, str(root)], f"building {image}", _ENGINE_FIX)
    return list(images)


def save_image(image: str, dest_dir: Path, *, docker: str = "docker") -> Path:
    """`docker save -o <dest_dir>/<name>.tar <image>`; returns the tar's path."""
    out = dest_dir / (image.replace("/", "_").replace(":", "_") + ".tar")
    _run([_docker(docker), "save", "-o", str(out), image], f"saving {image}",
         f"Build it first (`docker build`, or sideload with build on). {_ENGINE_FIX}")
    if not out.is_file() or out.stat().st_size == 0:
        raise TargetError(f"`docker save` left no archive at {out}: check the disk space of {dest_dir}")
    return out


def sideload_archive(session: SshSession, archive: Path, image: str, *, sudo: bool = True) -> None:
    """Copy one saved image to a node and import it into containerd's k8s.io namespace.

    Parameters:
        session: an SSH session to the node.
        archive: the `docker save` tar.
        image: the image it holds (checked in `ctr images ls` after the import).
        sudo: run ctr through sudo (containerd's socket is root's).
    """
    node = session.host.hostname
    with archive.open("rb") as f:
        remote = session.check(
            "umask 077; f=$(mktemp /tmp/gtnb-image.XXXXXX) && cat > \"$f\" && echo \"$f\"",
            stdin=f, timeout_s=UPLOAD_TIMEOUT_S, what=f"copying {archive.name} to {node}",
            fix="Check free space in /tmp on the node",
        ).stdout.strip()
    qremote = shlex.quote(remote)
    try:
        session.check(f"ctr -n k8s.io image import {qremote}", sudo=sudo, timeout_s=600,
                      what=f"importing {image} on {node}",
                      fix="Check that containerd runs (`systemctl status containerd`) and ctr is installed")
    finally:
        try:
            session.run(f"rm -f {qremote}")
        except TargetError as exc:  # a lost connection must not hide the import's own error
            log.warning("could not remove %s on %s: %s", remote, node, exc)
    listed = session.check("ctr -n k8s.io images ls -q", sudo=sudo, what=f"listing images on {node}",
                           fix="Check containerd on the node").stdout.split()
    if containerd_name(image) not in listed and image not in listed:
        raise TargetError(f"{image} is not in containerd's k8s.io namespace on {node} after the import "
                          f"(it lists {len(listed)} images): check the archive and `ctr -n k8s.io images ls`")
    log.info("sideloaded %s to %s", image, node)


def sideload(profile: str | Path | HomelabProfile | None = None, *, build: bool = True, docker: str = "docker",
             nodes: Sequence[str] | None = None,
             progress: Callable[[str], None] | None = None) -> dict[str, list[str]]:
    """Build (optionally) and sideload both workload images to every node of the profile.

    Parameters:
        profile: the homelab profile (file or loaded); default profiles/homelab.yaml.
        build: run `docker build` first; off to ship what the local engine already has.
        docker: the docker CLI.
        nodes: a subset of the profile's nodes (default all).
        progress: called with one line per step (a notebook's print, a tqdm.write).

    Returns:
        node -> images imported there.
    """
    from .targets.homelab import DEFAULT_PROFILE

    if not isinstance(profile, HomelabProfile):
        profile = load_profile(Path(profile) if profile else DEFAULT_PROFILE)
    chosen = list(nodes) if nodes else list(profile.nodes)
    unknown = [n for n in chosen if n not in profile.nodes]
    if not chosen or unknown:
        raise ConfigError(f"nodes {unknown or '(none)'} have no SSH entry under nodes.hosts in {profile.path}: "
                          f"add them (known: {', '.join(profile.nodes) or 'none'})")
    say = progress or (lambda line: log.info("%s", line))
    if build:
        build_images(docker=docker, images={i: IMAGES[i] for i in profile.images if i in IMAGES})
    done: dict[str, list[str]] = {n: [] for n in chosen}
    with tempfile.TemporaryDirectory(prefix="gtnb-images-") as tmp:
        archives = {image: save_image(image, Path(tmp), docker=docker) for image in profile.images}
        for node in chosen:
            with SshSession(profile.nodes[node]) as session:
                for image, archive in archives.items():
                    say(f"{node}: importing {image} ({archive.stat().st_size / 1e6:.1f} MB)")
                    sideload_archive(session, archive, image, sudo=profile.node_sudo)
                    done[node].append(image)
    say(f"sideloaded {', '.join(profile.images)} to {', '.join(chosen)}")
    return done
