"""Field grammars the IGW manifest borrows from Istio, Go and Kubernetes.

Each parser accepts exactly what the real consumer accepts, so a manifest the local lab runs is one
the cluster takes too: `terminationDrainDuration` is a protobuf Duration in Istio's ProxyConfig
(`5s`, `2.5s`; not `1m`), proxyMetadata values reach pilot-agent as env and are read with Go's
`time.ParseDuration` / `strconv.ParseBool`, and label selectors match as in Kubernetes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = [
    "ISTIO_DEFAULT_TERMINATION_DRAIN_S",
    "ISTIO_DEFAULT_MINIMUM_DRAIN",
    "parse_proto_duration",
    "parse_go_duration",
    "parse_go_bool",
    "selector_matches",
    "FieldReader",
    "yaml_error_summary",
]

# Istio's defaults: ProxyConfig.terminationDrainDuration and pilot-agent's MINIMUM_DRAIN_DURATION.
ISTIO_DEFAULT_TERMINATION_DRAIN_S = 5.0
ISTIO_DEFAULT_MINIMUM_DRAIN = "5s"

_PROTO_DURATION = re.compile(r"(\d+)(\.\d{1,9})?s")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GO_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_GO_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def parse_proto_duration(value: Any) -> float:
    """Seconds of a protobuf JSON Duration such as `5s` or `2.5s`; ValueError otherwise."""
    if not isinstance(value, str):
        raise ValueError(f"{value!r} has no unit (a protobuf Duration is a string like 5s)")
    if not _PROTO_DURATION.fullmatch(value):
        raise ValueError(f"{value!r} is not a protobuf Duration (seconds with an s suffix; no m/h/ms units)")
    return float(value[:-1])


def parse_go_duration(value: Any) -> float:
    """Seconds of a Go duration such as `1s`, `500ms` or `1m30s`; ValueError otherwise (or negative)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{value!r} is not a Go duration")
    if value == "0":
        return 0.0
    if value.startswith("-"):
        raise ValueError(f"{value!r} is negative")
    text = value[1:] if value.startswith("+") else value
    pos, total = 0, 0.0
    while pos < len(text):
        m = _GO_PART.match(text, pos)
        if not m:
            raise ValueError(f"{value!r} is not a Go duration (e.g. 1s, 500ms, 1m30s)")
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    if pos == 0:
        raise ValueError(f"{value!r} is not a Go duration (e.g. 1s, 500ms, 1m30s)")
    return total


def parse_go_bool(value: Any) -> bool:
    """A boolean as Go's strconv.ParseBool reads it; ValueError otherwise."""
    if value in _GO_TRUE:
        return True
    if value in _GO_FALSE:
        return False
    raise ValueError(f"{value!r} is not a boolean Go accepts (true/false, 1/0, t/f)")


def selector_matches(selector: Any, labels: Mapping[str, str]) -> bool:
    """Whether a Kubernetes LabelSelector selects `labels` (a null selector selects nothing)."""
    if not isinstance(selector, dict):
        return False
    match_labels = selector.get("matchLabels") or {}
    if any(labels.get(str(k)) != str(v) for k, v in match_labels.items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op = str(expr.get("key")), expr.get("operator")
        values = {str(v) for v in expr.get("values") or []}
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


class FieldReader:
    """Field access with errors that name the file, the field and the fix."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, field: str, problem: str, fix: str) -> ConfigError:
        return ConfigError(f"{self.path}: {field}: {problem}; {fix}")

    def mapping(self, value: Any, field: str, fix: str = "write it as a mapping") -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(field, f"is a {type(value).__name__}, not a mapping", fix)
        return value

    def sequence(self, value: Any, field: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(field, f"is a {type(value).__name__}, not a list", "write it as a YAML list")
        return value

    def count(self, value: Any, field: str, default: int) -> int:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(field, f"{value!r} is not a whole number >= 0", "write a plain integer")
        return value

    def int_or_percent(self, value: Any, field: str, default: str, replicas: int, round_up: bool) -> tuple[int, bool]:
        """Resolve an IntOrString as the Deployment controller does; return (value, was_literal_zero)."""
        raw = default if value is None else value
        if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
            return raw, raw == 0
        if isinstance(raw, str) and (m := re.fullmatch(r"(\d+)%", raw)):
            scaled = int(m.group(1)) * replicas / 100
            # "0%" counts as zero too: the API server validates the number, not the resolved value.
            return (math.ceil(scaled) if round_up else math.floor(scaled)), int(m.group(1)) == 0
        raise self.fail(field, f"{raw!r} is neither a whole number nor a percentage", "write e.g. 1 or 25%")


def yaml_error_summary(exc: Exception) -> str:
    """One line for a YAML error: where and what (PyYAML's own message spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem
