"""The local lab's state directory (docs/contracts.md): where every process, log and socket of
one lab lives, and `lab.json`, the record other processes read to find the lab.

    <state>/lab.json                  index, addresses, pids, state (starting|serving|stopping|down)
    <state>/supervisor.log            the supervisor narrating what it does
    <state>/supervisor.out            the supervisor's own stdout/stderr (tracebacks)
    <state>/deployment.json           the applied manifest, replicas, restartedAt (survives down/up)
    <state>/backend.log               the backend's output, timestamped
    <state>/haproxy.log               HAProxy's log (timestamped lines only)
    <state>/haproxy.stderr.log        HAProxy's stderr: [NOTICE]/[WARNING]/[ALERT] messages
    <state>/haproxy/haproxy.cfg, admin.sock, master.sock
    <state>/pods/<pod>/<container>.log   lines with the `kubectl logs --timestamps` prefix
    <state>/pods/<pod>/<container>.exit  the exit code, written once the log is complete
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ConfigError, LabError

__all__ = ["REPO_ROOT", "LabState", "resolve_state_dir"]

REPO_ROOT = Path(__file__).resolve().parents[3]


def resolve_state_dir(state_dir: str | Path | None) -> Path:
    """The state directory to use: `state_dir`, else `.lab/` in the repo root. Created if needed."""
    path = Path(state_dir).expanduser() if state_dir is not None else REPO_ROOT / ".lab"
    if path.exists() and not path.is_dir():
        raise ConfigError(f"lab state dir {path} is a file: pass a directory (or remove the file)")
    # AF_UNIX paths are limited to 107 bytes; HAProxy's sockets live two levels below.
    if len(str(path.resolve() / "haproxy" / "master.sock")) > 107:
        raise ConfigError(
            f"lab state dir {path} is too deep for HAProxy's unix sockets (107-byte limit): "
            "use a shorter path"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


@dataclass(frozen=True)
class LabState:
    """Paths inside one state directory."""

    root: Path

    @property
    def lab_json(self) -> Path:
        return self.root / "lab.json"

    @property
    def supervisor_log(self) -> Path:
        return self.root / "supervisor.log"

    @property
    def supervisor_out(self) -> Path:
        return self.root / "supervisor.out"

    @property
    def deployment_json(self) -> Path:
        return self.root / "deployment.json"

    @property
    def backend_log(self) -> Path:
        return self.root / "backend.log"

    @property
    def pods_dir(self) -> Path:
        return self.root / "pods"

    @property
    def lock_file(self) -> Path:
        return self.root / "supervisor.lock"

    def container_log(self, pod: str, container: str) -> Path:
        return self.pods_dir / pod / f"{container}.log"

    def container_exit(self, pod: str, container: str) -> Path:
        return self.pods_dir / pod / f"{container}.exit"

    def read(self) -> dict[str, Any] | None:
        """lab.json, or None when no lab ever ran here."""
        try:
            return json.loads(self.lab_json.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise LabError(f"{self.lab_json} is unreadable ({exc}): remove it and run `gtnb lab up`") from exc

    def write(self, record: dict[str, Any]) -> None:
        # Atomic: readers in other processes never see half a file.
        tmp = self.lab_json.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(tmp, self.lab_json)
