"""The timings a mode runs with, read from its files: what run.json `parameters` records so the
analysis bounds S2 with the config in use rather than with its defaults (docs/contracts.md)."""

from __future__ import annotations

from hashlib import sha256

from .errors import ConfigError, RunError
from .haproxy_config import parse_check_timings, render_haproxy_config
from .haproxy_stat import IGW_BACKEND
from .manifests import load_igw_spec, manifest_path

__all__ = ["mode_timings"]


def mode_timings(mode: str, values: dict[str, str], cfg_sha256: str | None = None) -> dict[str, float | int]:
    """The check and poll timings a mode runs with, for run.json `parameters`.

    Parameters:
        mode: `current` or `improved`.
        values: the target's `haproxy_values()` (the config is rendered as the toggle did).
        cfg_sha256: the installed config's sha256; a different rendering is an error.

    Returns:
        `inter_s`, `fastinter_s`, `fall`, `rise` (the backend's `default-server` / `server`
        settings) and `poll_interval_s` (the hc container's HC_POLL_INTERVAL_S, hc's 1 s default).
    """
    text = render_haproxy_config(mode, values)
    if cfg_sha256 is not None and sha256(text.encode()).hexdigest() != cfg_sha256:
        raise RunError(f"haproxy-{mode}.cfg rendered now (sha256 {sha256(text.encode()).hexdigest()[:12]}) is not "
                       f"the config the toggle installed ({cfg_sha256[:12]}): was the file edited during the run?")
    hc_env = load_igw_spec(manifest_path(mode)).container("hc").env
    raw = hc_env.get("HC_POLL_INTERVAL_S", "1")
    try:
        poll = float(raw)
    except ValueError:
        raise ConfigError(f"{manifest_path(mode).name}: hc's HC_POLL_INTERVAL_S {raw!r} is not a number of "
                          "seconds: write it like \"1\"") from None
    return {**parse_check_timings(text, IGW_BACKEND).as_parameters(), "poll_interval_s": poll}
