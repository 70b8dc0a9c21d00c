"""The pytest fixtures the homelab-path tests share: a module's sshd, a test's HAProxy node, a test's
API stub. A test module takes them with `from _homelab_fixtures import node, sshd, stub` (pytest finds
fixtures imported into a module); each is started and reaped by the context manager it wraps."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from _kubestub import Stub, running_stub
from _sshd import Node, Sshd, running_haproxy, running_sshd

__all__ = ["sshd", "node", "stub"]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """One sshd per test module (starting one costs a host key and a listen)."""
    with running_sshd(tmp_path_factory.mktemp("sshd")) as s:
        yield s


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    """A fresh HAProxy node per test: tests reload and break its config."""
    with running_haproxy(tmp_path / "node") as n:
        yield n


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[Stub]:
    """A fresh stub of the Kubernetes API contract per test."""
    with running_stub(tmp_path) as s:
        yield s
