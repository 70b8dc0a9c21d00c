"""Test harness for the SSH path: a real OpenSSH server and a real HAProxy on loopback.

`/usr/sbin/sshd -D -e` runs as a child of the test (PID 1 here does not reap orphans), with a
generated host key, a generated client key and an AuthorizedKeysFile in tmp. The "HAProxy node"
is this machine: a real master-worker HAProxy (`-W -db -S master.sock`) started by the test, in
front of a small HTTP backend thread. Everything is stopped and waited for at the end.
"""

from __future__ import annotations

import getpass
import http.server
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from gtnb._wait import wait_until
from gtnb.config import BalancerSettings, FrontendSettings, SshHost

SSHD = "/usr/sbin/sshd"
USER = getpass.getuser()  # root here; as another user sshd runs unprivileged and logs in only as it
ADDRS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
HAPROXY = "/usr/sbin/haproxy"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return Path(f"{path}.pub").read_text().strip()


@dataclass
class Sshd:
    port: int
    dir: Path
    host_pub: str
    client_key: Path
    known_hosts: Path
    bin_dir: Path  # first on the sessions' PATH: tests put stand-in tools here (ctr, sudo, ...)
    proc: subprocess.Popen[bytes]

    def host(self, *, jump: bool = False, known_hosts: Path | None = None, accept_unknown: bool = False,
             addr: str = "127.0.0.1") -> SshHost:
        hop = SshHost(name="jump", hostname="127.0.0.1", port=self.port, user=USER,
                      identity_files=(self.client_key,), known_hosts=self.known_hosts)
        return SshHost(name="node", hostname=addr, port=self.port, user=USER,
                       identity_files=(self.client_key,), jump=hop if jump else None,
                       known_hosts=known_hosts or self.known_hosts, accept_unknown_host_keys=accept_unknown)

    def profile_ssh(self) -> dict[str, object]:
        """The `ssh:` section of a homelab profile that logs in to this sshd."""
        return {"user": USER, "port": self.port, "identity_file": str(self.client_key),
                "known_hosts": str(self.known_hosts)}


@contextmanager
def running_sshd(tmp: Path) -> Iterator[Sshd]:
    """Start sshd on 127.0.0.1:<free port>; yield it; stop and reap it."""
    tmp.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory (Debian path)
    host_key, client_key = tmp / "host_key", tmp / "client_key"
    host_pub = keygen(host_key)
    client_pub = keygen(client_key)
    (tmp / "authorized_keys").write_text(client_pub + "\n")
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    port = free_port()
    # Three loopback addresses stand for three hosts (the HAProxy node, nodes): a session can tell
    # which one it reached from $SSH_CONNECTION.
    (tmp / "known_hosts").write_text("".join(f"[{a}]:{port} {host_pub}\n" for a in ADDRS))
    path = f"{bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    (tmp / "sshd_config").write_text(
        f"Port {port}\n" + "".join(f"ListenAddress {a}\n" for a in ADDRS) + f"HostKey {host_key}\nPidFile none\n"
        f"AuthorizedKeysFile {tmp}/authorized_keys\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        f"AllowTcpForwarding yes\nSetEnv PATH={path}\nLogLevel VERBOSE\n"
    )
    log = open(tmp / "sshd.log", "wb")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(tmp / "sshd_config")], stdout=log, stderr=log)
    try:
        wait_until(lambda: proc.poll() is not None or _banner(port), timeout_s=20, what=f"sshd on :{port}")
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {(tmp / 'sshd.log').read_text()}")
        yield Sshd(port, tmp, host_pub, client_key, tmp / "known_hosts", bin_dir, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


class _Slow(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    started = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urlparse(self.path)
        if url.path == "/sleep":
            type(self).started.set()
            time.sleep(float(parse_qs(url.query).get("seconds", ["1"])[0]))
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Node:
    """The 'HAProxy node': paths, ports and the running HAProxy master."""

    dir: Path
    cfg_path: Path
    admin_sock: Path
    frontend_port: int
    backend_port: int
    log_path: Path
    proc: subprocess.Popen[bytes]
    request_started: threading.Event

    def config(self, *, extra: str = "", servers: tuple[str, ...] = ("master1", "worker1", "worker2")) -> str:
        lines = []
        for i, name in enumerate(servers):
            # master1 is up (the backend); the others point at a closed port, so they go DOWN
            # with L4 errors as on a node without an IGW pod.
            port = self.backend_port if i == 0 else 1
            lines.append(f"  server {name} 127.0.0.1:{port} check inter 500ms fall 2 rise 1")
        return (
            "global\n"
            f"  stats socket {self.admin_sock} mode 600 level admin\n"
            "  log stdout format iso local0\n"
            "defaults\n  mode http\n  log global\n  option httplog\n"
            "  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n"
            f"frontend fe\n  bind 127.0.0.1:{self.frontend_port}\n  default_backend istio-http-backend\n"
            "backend istio-http-backend\n  balance roundrobin\n" + "\n".join(lines) + "\n" + extra
        )

    def settings(self, ssh: SshHost, **kw: object) -> BalancerSettings:
        base = dict(
            ssh=ssh, sudo=False, admin_socket=str(self.admin_sock), config_path=str(self.cfg_path),
            # SIGUSR2 to the master is HAProxy's reload, what `systemctl reload haproxy` sends.
            reload_command=f"kill -USR2 {self.proc.pid}", haproxy_bin=HAPROXY,
            log_command=f"tail -F -n 0 {self.log_path}", reload_timeout_s=15.0,
        )
        base.update(kw)
        return BalancerSettings(**base)  # type: ignore[arg-type]

    def frontend(self) -> FrontendSettings:
        return FrontendSettings(host="127.0.0.1", port=self.frontend_port, sni="example.local", ca=self.dir / "ca.pem")


@contextmanager
def running_haproxy(tmp: Path) -> Iterator[Node]:
    """A master-worker HAProxy in front of a slow HTTP backend thread; stopped and reaped after."""
    tmp.mkdir(parents=True, exist_ok=True)
    _Slow.started = threading.Event()
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    backend.daemon_threads = True
    t = threading.Thread(target=backend.serve_forever, daemon=True)
    t.start()
    node = Node(tmp, tmp / "haproxy.cfg", tmp / "admin.sock", free_port(), backend.server_address[1],
                tmp / "haproxy.log", None, _Slow.started)  # type: ignore[arg-type]
    node.cfg_path.write_text(node.config())
    log = open(node.log_path, "ab")
    node.proc = subprocess.Popen([HAPROXY, "-W", "-db", "-S", str(tmp / "master.sock"), "-f", str(node.cfg_path)],
                                 stdout=log, stderr=log)
    try:
        wait_until(lambda: node.proc.poll() is not None or _stat_up(node), timeout_s=20,
                   what="haproxy to answer on its admin socket with master1 UP")
        if node.proc.poll() is not None:
            raise RuntimeError(f"haproxy exited: {node.log_path.read_text()}")
        yield node
    finally:
        node.proc.terminate()  # SIGTERM to the master stops its workers too
        try:
            node.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait()
        log.close()
        backend.shutdown()
        backend.server_close()


def admin(node: Node, command: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(node.admin_sock))
        s.sendall(command.encode() + b"\n")
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks).decode()


def _stat_up(node: Node) -> bool:
    try:
        return any(line.startswith("istio-http-backend,master1,") and ",UP," in line
                   for line in admin(node, "show stat").splitlines())
    except OSError:
        return False


def worker_pid(node: Node) -> str:
    for line in admin(node, "show info").splitlines():
        if line.startswith("Pid:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("show info has no Pid line")


def install_tool(bin_dir: Path, name: str, script: str) -> Path:
    """Put a stand-in tool on the test sshd sessions' PATH."""
    p = bin_dir / name
    p.write_text(script)
    p.chmod(0o755)
    return p


def which(name: str) -> str | None:
    return shutil.which(name)
