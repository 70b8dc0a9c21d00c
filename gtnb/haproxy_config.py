"""Render `haproxy/haproxy-<mode>.cfg` for a target and check it with `haproxy -c`.

The committed configs use HAProxy's own environment syntax, `"${GTNB_NAME}"`, for everything that
differs between the local lab and the homelab (addresses, ports, cert and socket paths, the log
target). Rendering substitutes those names with a target's values, so the text HAProxy runs is
complete on its own and its sha256 can be recorded in the run journal. The same file also runs
unrendered with the variables exported, which is what HAProxy's syntax buys us.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from .errors import BalancerError, ConfigError
from .vocabulary import MODES, ensure_mode

__all__ = [
    "MODES",
    "haproxy_values_doc",
    "HOMELAB_DEFAULTS",
    "haproxy_config_path",
    "config_variables",
    "render_haproxy_config",
    "find_haproxy",
    "check_config",
    "CheckTimings",
    "parse_check_timings",
]

log = logging.getLogger(__name__)

# name -> meaning; the same table is in docs/contracts.md ("HAProxy config values").
_VALUES_DOC: dict[str, str] = {
    "GTNB_FRONTEND_ADDR": "address both frontends listen on (local: 127.N.0.1; homelab: the node's address or 0.0.0.0)",
    "GTNB_FRONTEND_PORT": "TLS frontend port for example.local (local: 8443; homelab: 443)",
    "GTNB_API_PORT": "control-plane frontend port (6443)",
    "GTNB_APISERVER": "host:port behind the control-plane frontend (local: 127.N.0.2:7000; homelab: master1:6443)",
    "GTNB_CERT": "path of example.local.pem (certificate + key, made by `gtnb certs`)",
    "GTNB_ADMIN_SOCKET": "path of the admin stats socket (`level admin`; local: .lab/haproxy/admin.sock)",
    "GTNB_LOG_TARGET": "HAProxy `log` target (local: stdout; homelab: /dev/log)",
    "GTNB_LOG_FORMAT": "HAProxy log format (local: iso, microsecond timestamps; homelab: rfc3164 for syslog)",
    "GTNB_MASTER1_ADDR": "address of node master1 (its IGW pod serves :8080, its hc :15080)",
    "GTNB_WORKER1_ADDR": "address of node worker1",
    "GTNB_WORKER2_ADDR": "address of node worker2",
}

# What a Debian HAProxy node uses when a homelab profile does not say otherwise; the profile still
# gives the addresses (GTNB_FRONTEND_ADDR, GTNB_APISERVER, GTNB_*_ADDR).
HOMELAB_DEFAULTS: Mapping[str, str] = MappingProxyType({
    "GTNB_FRONTEND_PORT": "443",
    "GTNB_API_PORT": "6443",
    "GTNB_CERT": "/etc/haproxy/certs/example.local.pem",
    "GTNB_ADMIN_SOCKET": "/run/haproxy/admin.sock",
    "GTNB_LOG_TARGET": "/dev/log",
    "GTNB_LOG_FORMAT": "rfc3164",
})

# HAProxy 2.6's `log ... format <fmt>` names.
_LOG_FORMATS = ("local", "iso", "raw", "rfc3164", "rfc5424", "short", "priority", "timed")

# `"${NAME}"`: HAProxy also expands unquoted ${NAME} in some places, but the committed files always
# quote, so one pattern finds every use.
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def haproxy_values_doc() -> dict[str, str]:
    """Return the variables the HAProxy configs use, name -> meaning (a copy)."""
    return dict(_VALUES_DOC)


def haproxy_config_path(mode: str) -> Path:
    """Return the committed config file of a mode.

    Parameters:
        mode: `current` or `improved`.

    Returns:
        `haproxy/haproxy-<mode>.cfg` of the repository this package lives in.
    """
    ensure_mode(mode)
    return Path(__file__).resolve().parent.parent / "haproxy" / f"haproxy-{mode}.cfg"


def config_variables(text: str) -> set[str]:
    """Return the `${NAME}` variables a config text uses."""
    return set(_VAR.findall(text))


def _ensure_value(name: str, value: object) -> str:
    """Check one value: it lands inside a double-quoted HAProxy word, so it must stay one word."""
    if not isinstance(value, str):
        raise ConfigError(f"HAProxy value {name} must be a string, got {type(value).__name__}: quote it")
    if not value:
        raise ConfigError(f"HAProxy value {name} is empty: give {_VALUES_DOC.get(name, 'a value')}")
    for bad, why in (('"', "a double quote"), ("\\", "a backslash"), ("$", "a dollar sign"), ("\n", "a newline"), ("\r", "a carriage return"), ("#", "a hash")):
        if bad in value:
            raise ConfigError(
                f"HAProxy value {name}={value!r} contains {why}, which would break the quoted word in the "
                "config: use a value without it"
            )
    if name.endswith("_PORT"):
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise ConfigError(f"HAProxy value {name}={value!r} is not a port: use a number in 1..65535")
    if name == "GTNB_APISERVER":
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"HAProxy value {name}={value!r} is not host:port: write it like 127.100.0.2:7000")
    if name == "GTNB_LOG_FORMAT" and value not in _LOG_FORMATS:
        raise ConfigError(f"HAProxy value {name}={value!r} is not a log format HAProxy knows: use one of {', '.join(_LOG_FORMATS)}")
    return value


def render_haproxy_config(mode: str, values: Mapping[str, str], *, source: str | Path | None = None) -> str:
    """Substitute a target's values into the config of a mode.

    Parameters:
        mode: `current` or `improved`.
        values: one string per variable of `haproxy_values_doc()`; no more, no fewer.
        source: another config file to render instead of `haproxy/haproxy-<mode>.cfg` (tests).

    Returns:
        The config text with every `${GTNB_*}` replaced, ready for `check_config`.
    """
    path = Path(source) if source is not None else haproxy_config_path(mode)
    ensure_mode(mode)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read HAProxy config {path}: {exc.strerror}; is the checkout complete?") from exc
    used = config_variables(text)
    missing = sorted(used - set(values))
    unknown = sorted(set(values) - used)
    if missing or unknown:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(f"{n} ({_VALUES_DOC.get(n, 'undocumented')})" for n in missing))
        if unknown:
            parts.append("unknown " + ", ".join(unknown) + f" (not used by {path.name})")
        raise ConfigError(f"cannot render {path.name}: {'; '.join(parts)}. Pass exactly the variables it uses.")
    checked = {name: _ensure_value(name, values[name]) for name in used}
    return _VAR.sub(lambda m: checked[m.group(1)], text)


def _alerts(output: str, cfg: Path) -> str:
    """Keep haproxy's ALERT lines, without pid noise and with the temp path named plainly."""
    lines = [line for line in output.splitlines() if "[ALERT]" in line] or output.strip().splitlines()
    cleaned = [re.sub(r"^\[ALERT\]\s+\(\d+\)\s*:\s*", "", line).replace(str(cfg), "<config>") for line in lines]
    return "\n".join(cleaned)


def find_haproxy(haproxy: str = "haproxy") -> str:
    """Return the haproxy executable to run: `haproxy` itself if it is a path or on PATH, else
    Debian's /usr/sbin/haproxy (often missing from a normal user's PATH), else `haproxy` as given."""
    if os.sep in haproxy:
        return haproxy
    found = shutil.which(haproxy)
    if found:
        return found
    sbin = Path("/usr/sbin") / haproxy
    return str(sbin) if os.access(sbin, os.X_OK) else haproxy


def check_config(text: str, haproxy: str = "haproxy") -> None:
    """Run `haproxy -c` on a config text; raise when HAProxy refuses it.

    Parameters:
        text: a rendered config (every file it names, such as the certificate, must exist).
        haproxy: the haproxy executable.

    Returns:
        None. Raises BalancerError quoting haproxy's own message when the config is refused.
    """
    exe = find_haproxy(haproxy)
    with tempfile.TemporaryDirectory(prefix="gtnb-haproxy-check-") as tmp:
        cfg = Path(tmp) / "haproxy.cfg"
        cfg.write_text(text)
        try:
            proc = subprocess.run(
                [exe, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=60, check=False
            )
        except FileNotFoundError as exc:
            raise BalancerError(
                f"haproxy executable {haproxy!r} not found: install it (apt-get install haproxy) or pass its path"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise BalancerError(f"`{haproxy} -c` did not finish within 60 s") from exc
        output = (proc.stdout or "") + (proc.stderr or "")
        if proc.returncode != 0:
            raise BalancerError(f"HAProxy refused the config (`haproxy -c` exit {proc.returncode}):\n{_alerts(output, cfg)}")
        for line in output.splitlines():
            if "[WARNING]" in line:
                log.warning("haproxy -c: %s", line.replace(str(cfg), "<config>"))


# -- check timings ---------------------------------------------------------------------------

# HAProxy 2.6's defaults for a checked server (fastinter and downinter default to inter).
_CHECK_DEFAULTS = {"inter": 2.0, "fall": 3, "rise": 2}
_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_TIME = re.compile(r"^(\d+(?:\.\d+)?)(us|ms|s|m|h|d)?$")


@dataclass(frozen=True)
class CheckTimings:
    """The health-check timings HAProxy applies to a backend's servers.

    Attributes:
        inter_s: `inter`, the check period while a server is UP.
        fastinter_s: `fastinter`, the period between a first failed check and DOWN.
        fall: failed checks in a row that mark a server DOWN.
        rise: passed checks in a row that mark it UP.
    """

    inter_s: float
    fastinter_s: float
    fall: int
    rise: int

    def as_parameters(self) -> dict[str, float | int]:
        """The run.json `parameters` keys the analysis reads (docs/contracts.md)."""
        return {"inter_s": self.inter_s, "fastinter_s": self.fastinter_s, "fall": self.fall, "rise": self.rise}


def _seconds(word: str, keyword: str, line: str) -> float:
    # HAProxy reads a bare number as milliseconds.
    m = _TIME.match(word)
    if not m:
        raise ConfigError(f"HAProxy `{keyword} {word}` in `{line}` is not a time: write it like 500ms or 2s")
    return float(m.group(1)) * _TIME_UNITS[m.group(2) or "ms"]


def _check_settings(words: list[str], line: str) -> dict[str, float | int]:
    out: dict[str, float | int] = {}
    for key, value in zip(words, words[1:]):
        if key in ("inter", "fastinter"):
            out[key] = _seconds(value, key, line)
        elif key in ("fall", "rise"):
            if not value.isdigit() or int(value) < 1:
                raise ConfigError(f"HAProxy `{key} {value}` in `{line}` is not a count: write a number >= 1")
            out[key] = int(value)
    return out


def parse_check_timings(text: str, backend: str = "istio-http-backend") -> CheckTimings:
    """Read the check timings of a backend's servers from a (rendered) config text.

    `default-server` lines apply from where they stand (a `defaults` section's to the proxies
    after it, a backend's to its later servers); a `server` line's own settings come last; what
    no line sets is HAProxy's default (inter 2s, fastinter = inter, fall 3, rise 2).

    Parameters:
        text: the config, e.g. the text the toggle installed.
        backend: the backend whose servers are read.

    Returns:
        CheckTimings. Raises ConfigError when the backend or its servers are missing, when a
        value is not a time or count, or when its servers are checked with different timings.
    """
    section, in_backend, seen_backend = "", False, False
    defaults_ds: dict[str, float | int] = {}
    backend_ds: dict[str, float | int] = {}
    servers: dict[str, dict[str, float | int]] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        words = line.split()
        if not words:
            continue
        if words[0] in ("global", "defaults", "frontend", "backend", "listen", "peers", "resolvers", "userlist",
                        "program", "mailers", "cache", "ring", "http-errors"):
            section = words[0]
            in_backend = section in ("backend", "listen") and len(words) > 1 and words[1] == backend
            seen_backend |= in_backend
            if section == "defaults":
                defaults_ds = {}  # a new defaults section replaces the previous one
            if in_backend:
                backend_ds = dict(defaults_ds)
            continue
        if words[0] == "default-server" and section == "defaults":
            defaults_ds.update(_check_settings(words[1:], line))
        elif words[0] == "default-server" and in_backend:
            backend_ds.update(_check_settings(words[1:], line))
        elif words[0] == "server" and in_backend and len(words) > 1:
            servers[words[1]] = {**backend_ds, **_check_settings(words[2:], line)}
    if not seen_backend:
        raise ConfigError(f"the HAProxy config has no backend {backend!r}: is it one of haproxy/haproxy-<mode>.cfg?")
    if not servers:
        raise ConfigError(f"backend {backend!r} of the HAProxy config has no server lines: add the nodes' servers")
    timings = {}
    for name, got in servers.items():
        inter = float(got.get("inter", _CHECK_DEFAULTS["inter"]))
        timings[name] = CheckTimings(inter_s=inter, fastinter_s=float(got.get("fastinter", inter)),
                                     fall=int(got.get("fall", _CHECK_DEFAULTS["fall"])),
                                     rise=int(got.get("rise", _CHECK_DEFAULTS["rise"])))
    distinct = set(timings.values())
    if len(distinct) > 1:
        listing = "; ".join(f"{n}: {t}" for n, t in timings.items())
        raise ConfigError(f"the servers of backend {backend!r} are checked with different timings ({listing}): "
                          "give them one `default-server` line")
    return distinct.pop()
