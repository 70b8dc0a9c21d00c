"""SSH hosts as `ssh NAME` would reach them: the profile's values first, then ~/.ssh/config
(HostName, User, Port, IdentityFile, ProxyJump chains). Part of the lab profile (gtnb.config)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["SshHost", "resolve_ssh_host"]


@dataclass(frozen=True)
class SshHost:
    """One SSH hop, resolved through ~/.ssh/config (HostName, User, Port, IdentityFile, ProxyJump)."""

    name: str  # what the user typed: an ssh_config alias or an address
    hostname: str  # where to connect
    port: int = 22
    user: str | None = None
    identity_files: tuple[Path, ...] = ()
    jump: SshHost | None = None  # ProxyJump: reached through this host's direct-tcpip channel
    known_hosts: Path = Path("~/.ssh/known_hosts")
    accept_unknown_host_keys: bool = False

    def ssh_command(self) -> str:
        """The `ssh` command line a person would type to reach this host, for messages."""
        jump = f"-J {self.jump.name} " if self.jump else ""
        if re.fullmatch(r"[A-Za-z0-9_.-]+", self.name) and self.port == 22 and not self.user:
            return f"ssh {jump}{self.name}"
        port = f"-p {self.port} " if self.port != 22 else ""
        who = f"{self.user}@" if self.user else ""
        return f"ssh {jump}{port}{who}{self.hostname}"

    def __str__(self) -> str:
        who = f"{self.user}@" if self.user else ""
        via = f" via {self.jump}" if self.jump else ""
        return f"{who}{self.hostname}:{self.port}{via}"


def resolve_ssh_host(
    name: str,
    *,
    user: str | None = None,
    port: int | None = None,
    jump: str | None = None,
    identity_file: str | None = None,
    ssh_config: Path | None = None,
    known_hosts: Path | None = None,
    accept_unknown_host_keys: bool = False,
    inherited_identity: str | None = None,
    _depth: int = 0,
) -> SshHost:
    """Resolve a host the way `ssh NAME` would: the profile's values first, then ~/.ssh/config.

    Parameters:
        name: an ssh_config alias (`homelab`), an address, or `user@host:port`.
        user, port, jump, identity_file: explicit values; they win over ssh_config.
        ssh_config: the file to read (default ~/.ssh/config when it exists).
        inherited_identity: a key file for jump hops that ssh_config gives none (the profile's
            identity_file serves the whole chain, as `ssh -i key -J hop host` does).

    Returns:
        The SshHost, with its ProxyJump chain resolved the same way.
    """
    if _depth > 5:
        raise ConfigError(f"ProxyJump chain through {name!r} is longer than 5 hops (a loop?): fix ~/.ssh/config")
    m = re.fullmatch(r"(?:(?P<user>[^@\s]+)@)?(?P<host>\[[^\]]+\]|[^:@\s]+)(?::(?P<port>\d+))?", name.strip())
    if not m:
        raise ConfigError(f"ssh host {name!r} is not `host`, `user@host` or `user@host:port`")
    alias = m["host"].strip("[]")
    user = user or m["user"]
    port = port or (int(m["port"]) if m["port"] else None)
    cfg_path = ssh_config or Path("~/.ssh/config").expanduser()
    found: dict[str, Any] = {}
    if cfg_path.is_file():
        import paramiko  # deferred: only profiles with SSH need it

        found = paramiko.SSHConfig.from_path(str(cfg_path)).lookup(alias)
    proxy = jump or found.get("proxyjump")
    if proxy and proxy.lower() == "none":
        proxy = None
    if proxy and "," in proxy:
        # `ProxyJump a,b`: reach b through a, then the host through b.
        *first, last = [h.strip() for h in proxy.split(",")]
        chain = resolve_ssh_host(",".join(first), ssh_config=ssh_config, known_hosts=known_hosts,
                                 accept_unknown_host_keys=accept_unknown_host_keys,
                                 inherited_identity=identity_file or inherited_identity, _depth=_depth + 1)
        jump_host: SshHost | None = _with_jump(
            resolve_ssh_host(last, ssh_config=ssh_config, known_hosts=known_hosts,
                             accept_unknown_host_keys=accept_unknown_host_keys,
                             inherited_identity=identity_file or inherited_identity, _depth=_depth + 1),
            chain,
        )
    elif proxy:
        jump_host = resolve_ssh_host(proxy, ssh_config=ssh_config, known_hosts=known_hosts,
                                     accept_unknown_host_keys=accept_unknown_host_keys,
                                     inherited_identity=identity_file or inherited_identity, _depth=_depth + 1)
    else:
        jump_host = None
    identities = ([identity_file] if identity_file else list(found.get("identityfile", []))
                  or ([inherited_identity] if inherited_identity else []))
    return SshHost(
        name=name,
        hostname=str(found.get("hostname", alias)),
        port=int(port or found.get("port", 22)),
        user=user or found.get("user"),
        identity_files=tuple(Path(os.path.expanduser(i)) for i in identities),
        jump=jump_host,
        known_hosts=(known_hosts or Path("~/.ssh/known_hosts")).expanduser(),
        accept_unknown_host_keys=accept_unknown_host_keys,
    )


def _with_jump(host: SshHost, jump: SshHost) -> SshHost:
    return replace(host, jump=jump)
