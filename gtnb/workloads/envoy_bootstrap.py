"""The Envoy bootstrap the local lab's agent generates: one gateway listener, one backend cluster.

It stands in for what istiod would push to an ingress gateway: an HTTP listener (codec AUTO, so
HAProxy may speak HTTP/1.1 or h2c to it) that routes everything to service-a-backend, with
timeouts off so a 60 s `/sleep` or `/stream` passes, and Istio's text access log on stdout.
Names follow Istio's (`0.0.0.0_8080`, `outbound_0.0.0.0_8080`, `outbound|8080||...`) so our
access log and stats look like a real gateway's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ._common import parse_addr

__all__ = ["ISTIO_ACCESS_LOG_FORMAT", "BACKEND_CLUSTER", "render_bootstrap", "write_bootstrap",
           "admin_address"]

# Istio's default text access log format (meshConfig.accessLogFormat unset), see formats.md.
ISTIO_ACCESS_LOG_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "
    '"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% '
    "%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% "
    "%REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"
)

BACKEND_CLUSTER = "outbound|8080||service-a-backend.service-a.svc.cluster.local"

# Shorter than the backend's keep-alive (75 s): Envoy closes idle upstream connections first.
UPSTREAM_IDLE_TIMEOUT = "30s"


def _socket(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def render_bootstrap(listen: str, backend: str, admin: str, *, node_id: str = "gtnb-igw") -> dict[str, Any]:
    """Build the bootstrap as a dict.

    Parameters:
        listen: the gateway listener `HOST:PORT` (HAProxy's server address).
        backend: service-a-backend's `HOST:PORT`.
        admin: Envoy's admin `HOST:PORT` (the hc sidecar and the agent call it).
        node_id: Envoy's node id.

    Returns:
        The bootstrap, ready for json.dumps.
    """
    lhost, lport = parse_addr(listen, what="--listen / PROXY_LISTEN")
    bhost, bport = parse_addr(backend, what="--backend / PROXY_BACKEND")
    ahost, aport = parse_addr(admin, what="--admin / PROXY_ADMIN")
    name = f"0.0.0.0_{lport}"
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": f"outbound_{name}",
        "codec_type": "AUTO",
        # request_timeout is off by default; the route timeout below is the one that bites (15 s).
        "route_config": {
            "name": f"http.{lport}",
            "virtual_hosts": [{
                "name": "all",
                "domains": ["*"],
                "routes": [{
                    "name": "service-a-backend",
                    "match": {"prefix": "/"},
                    "route": {"cluster": BACKEND_CLUSTER, "timeout": "0s"},
                }],
            }],
        },
        "http_filters": [{
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        }],
        "access_log": [{
            "name": "envoy.access_loggers.stdout",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                "log_format": {"text_format_source": {"inline_string": ISTIO_ACCESS_LOG_FORMAT}},
            },
        }],
    }
    return {
        "node": {"id": node_id, "cluster": "service-a-igw"},
        "admin": {"address": _socket(ahost, aport)},
        "static_resources": {
            "listeners": [{
                "name": name,
                "address": _socket(lhost, lport),
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": hcm,
                }]}],
            }],
            "clusters": [{
                "name": BACKEND_CLUSTER,
                "type": "STATIC",
                "connect_timeout": "2s",
                "load_assignment": {
                    "cluster_name": BACKEND_CLUSTER,
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket(bhost, bport)}}]}],
                },
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "common_http_protocol_options": {"idle_timeout": UPSTREAM_IDLE_TIMEOUT},
                        "explicit_http_config": {"http_protocol_options": {}},
                    },
                },
            }],
        },
    }


def write_bootstrap(path: Path, bootstrap: dict[str, Any]) -> Path:
    """Write the bootstrap as JSON (Envoy picks the parser by the `.json` suffix)."""
    path.write_text(json.dumps(bootstrap, indent=2) + "\n")
    return path


def admin_address(path: Path) -> tuple[str, int]:
    """Read the admin `(host, port)` from an existing bootstrap file (JSON or YAML).

    Raises ConfigError naming the file when it cannot be read or has no admin socket address.
    """
    try:
        data = yaml.safe_load(path.read_text())
        sock = data["admin"]["address"]["socket_address"]
        return str(sock["address"]), int(sock["port_value"])
    except FileNotFoundError:
        raise ConfigError(f"--envoy-bootstrap {path}: no such file; give an existing bootstrap "
                          "or drop the flag to generate one from --listen/--backend/--admin") from None
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"--envoy-bootstrap {path}: cannot read admin.address.socket_address "
                          f"({type(exc).__name__}: {exc}); the agent needs Envoy's admin address") from None
