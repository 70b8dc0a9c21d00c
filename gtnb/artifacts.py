"""Run directories, the run.json journal and the lab lock.

A run writes into `artifacts/<YYYYmmdd-HHMMSS>/<scenario>-<mode>/`, a directory that is created
fresh and never reused, so two runs can never mix their files. The `Journal` rewrites run.json at
every step (atomically), so a run that is interrupted or crashes still leaves a journal saying
where it stopped. The `LabLock` makes a second run against the same lab refuse at once instead of
silently interleaving its traffic and artifacts with the first.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import __version__
from .errors import ArtifactError, ConfigError, RunLockedError

__all__ = [
    "SCHEMA",
    "STATUSES",
    "REPO_ROOT",
    "artifacts_root",
    "new_run_dir",
    "rfc3339",
    "Journal",
    "LabLock",
    "lab_lock_path",
    "read_journal",
]

SCHEMA = 1
# "running" is the state while a run is in progress: a journal still saying "running" after the
# process is gone means it was killed (SIGKILL, power loss) at `step`.
STATUSES = ("running", "completed", "failed", "aborted")
REPO_ROOT = Path(__file__).resolve().parents[1]
_ENV_ROOT = "GTNB_ARTIFACTS"


def rfc3339(ts: float | None = None) -> str:
    """UTC time as RFC3339 with microseconds and a `Z`, the one time format of gtnb's own lines.

    Parameters:
        ts: epoch seconds (default: now).

    Returns:
        e.g. `2026-12-01T00:15:05.730511Z`.
    """
    if ts is None:
        ts = time.time()
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def artifacts_root(override: str | os.PathLike[str] | None = None) -> Path:
    """Where run directories go.

    Parameters:
        override: an explicit root; else `$GTNB_ARTIFACTS`; else `<repo>/artifacts`.

    Returns:
        The root as an absolute path (not created here).
    """
    if override is not None:
        return Path(override).expanduser().resolve()
    env = os.environ.get(_ENV_ROOT)
    if env:
        return Path(env).expanduser().resolve()
    return REPO_ROOT / "artifacts"


def new_run_dir(
    scenario: str,
    mode: str,
    root: str | os.PathLike[str] | None = None,
    *,
    now: float | None = None,
    max_tries: int = 120,
) -> Path:
    """Create a fresh run directory `<root>/<YYYYmmdd-HHMMSS>/<scenario>-<mode>/`.

    An existing directory is never reused: when the name is taken (two runs in the same second),
    the next second is tried, up to `max_tries` seconds ahead.

    Parameters:
        scenario: S1..S4.
        mode: current | improved.
        root: the artifacts root (see `artifacts_root`).
        now: epoch seconds of the run's start (default: now).

    Returns:
        The created directory.
    """
    base = artifacts_root(root)
    start = int(now if now is not None else time.time())
    for offset in range(max_tries):
        stamp = datetime.fromtimestamp(start + offset, tz=timezone.utc).strftime("%Y%m%d-%H%M%S")
        path = base / stamp / f"{scenario}-{mode}"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir()  # exist_ok=False: the atomic "this name is mine" step
        except FileExistsError:
            continue
        except OSError as exc:
            raise ArtifactError(
                f"cannot create run directory {path}: {exc.strerror}; "
                f"check that {base} is writable or pass another artifacts root"
            ) from exc
        return path
    raise ArtifactError(
        f"no free run directory for {scenario}-{mode} under {base} within {max_tries} s "
        f"of {start}: remove stale directories or pass another artifacts root"
    )


class Journal:
    """run.json, rewritten atomically at every step of a run.

    Parameters:
        run_dir: the run directory (from `new_run_dir`).
        target, scenario, mode: what runs where.
        parameters: the scenario's resolved parameters.
    """

    def __init__(
        self, run_dir: Path, *, target: str, scenario: str, mode: str, parameters: dict[str, Any]
    ) -> None:
        self.path = Path(run_dir) / "run.json"
        self.data: dict[str, Any] = {
            "schema": SCHEMA,
            "gtnb_version": __version__,
            "versions": {},
            "target": target,
            "scenario": scenario,
            "mode": mode,
            "parameters": dict(parameters),
            "started_at": rfc3339(),
            "ended_at": None,
            "status": "running",
            "step": "start",
            "error": None,
            "sha256": {"manifest": None, "haproxy_cfg": None},
            "clock_offsets_s": {},
            "stat_interval_s": None,
            "stat_jitter_s": None,
            "killed_pod": None,
            "verdict": None,
        }
        self.write()

    def step(self, name: str, **fields: Any) -> None:
        """Record that the run reached step `name` (and any other keys), then write."""
        self.data["step"] = name
        self.update(**fields)

    def update(self, **fields: Any) -> None:
        """Set journal keys and write."""
        self.data.update(fields)
        self.write()

    def finish(self, status: str, error: str | None = None) -> None:
        """Close the journal: `completed`, `failed` or `aborted`, with the error if any."""
        if status not in STATUSES[1:]:
            raise ConfigError(f"journal status {status!r} is not one of {', '.join(STATUSES[1:])}")
        self.data.update(status=status, error=error, ended_at=rfc3339())
        self.write()

    def write(self) -> None:
        # Write a temporary file and rename it over run.json: a reader (or a crash) never sees a
        # half-written journal.
        tmp = self.path.with_name(".run.json.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        os.replace(tmp, self.path)


def read_journal(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a run directory's run.json.

    Returns:
        The journal as a dict. Raises ArtifactError when it is missing or not JSON.
    """
    path = Path(run_dir) / "run.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path} is missing: is {run_dir} a gtnb run directory?") from exc
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc}): the run was cut while writing it") from exc


def lab_lock_path(target: str, lab_id: str | os.PathLike[str] | None) -> Path:
    """The lock file of one lab, outside any artifacts root so runs writing to different roots
    still exclude each other.

    Parameters:
        target: local | homelab.
        lab_id: what identifies the lab: the local lab's state directory or the homelab profile.

    Returns:
        `<tmp>/gtnb-locks/<target>-<hash of lab_id>.lock`.
    """
    ident = str(Path(lab_id).expanduser().resolve()) if lab_id is not None else "default"
    digest = hashlib.sha256(f"{target}:{ident}".encode()).hexdigest()[:16]
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / "gtnb-locks"
    base.mkdir(parents=True, exist_ok=True)
    return base / f"{target}-{digest}.lock"


@dataclass
class LabLock:
    """An exclusive, non-blocking lock on one lab for the length of a run.

    It is an `flock` on a file, so the kernel releases it when the holder dies however it dies:
    a crashed run never leaves the lab locked. The file holds the holder's pid, run directory and
    start time, so the refusal can say who holds the lab.

    Parameters:
        path: the lock file (see `lab_lock_path`).
        lab: the lab in words, for messages.
    """

    path: Path
    lab: str
    _fd: int | None = None

    def acquire(self, run_dir: Path | None = None) -> None:
        """Take the lock or raise RunLockedError naming the holder."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise RunLockedError(
                f"the {self.lab} is in use by another run ({self._describe_holder()}): wait for "
                f"it to finish or stop it; lock file {self.path}"
            ) from None
        self._fd = fd
        self.note(run_dir)

    def note(self, run_dir: Path | None) -> None:
        """Record the holder (this pid, its run directory) for the message a refused run shows."""
        if self._fd is None:
            return
        holder = {"pid": os.getpid(), "run_dir": str(run_dir) if run_dir else None, "since": rfc3339()}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(holder).encode(), 0)

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        # Clear the holder first so a reader never sees a stale holder for a free lab.
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _describe_holder(self) -> str:
        try:
            holder = json.loads(self.path.read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            holder = {}
        if not holder:
            return "holder unknown"
        return f"pid {holder.get('pid')}, run {holder.get('run_dir')}, since {holder.get('since')}"

    def __enter__(self) -> LabLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
