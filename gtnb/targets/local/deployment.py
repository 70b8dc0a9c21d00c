"""The applied `service-a-igw` Deployment of a lab: what `kubectl apply`, `scale` and
`rollout restart` changed, kept in `deployment.json` so `lab up` brings the lab back in the mode
(and replicas) it was last in. The Controller runs it; this module decides what it runs.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from ...errors import ConfigError
from ...manifests import manifest_path
from ...vocabulary import MODES
from .addresses import LabAddresses
from .controller import Controller
from .podspec import deployment_from_manifest
from .state import LabState

__all__ = ["AppliedDeployment", "MODES"]

log = logging.getLogger("gtnb.lab")


def _now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class AppliedDeployment:
    """The last applied manifest text, its mode, replicas and restartedAt; persisted.

    Parameters:
        state: the lab's state directory.
        addresses: the lab's addresses (pods bind their node's).
        initial_mode: the mode of a lab that never ran in this state dir.
    """

    def __init__(self, state: LabState, addresses: LabAddresses, initial_mode: str) -> None:
        self.state = state
        self.addresses = addresses
        self.initial_mode = initial_mode
        self.controller: Controller | None = None
        self.data: dict[str, Any] = {}
        self._lock = threading.Lock()  # API handler threads apply, scale and restart at once

    @property
    def mode(self) -> str:
        return str(self.data.get("mode") or self.initial_mode)

    def _default(self, mode: str) -> dict[str, Any]:
        path = manifest_path(mode)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read {path} ({exc.strerror}): is the checkout complete?") from exc
        return {"manifest": text, "source": str(path), "mode": mode, "replicas": None, "restarted_at": None}

    def load(self) -> None:
        """Read deployment.json (the last applied state), else take the first start's mode."""
        try:
            saved = json.loads(self.state.deployment_json.read_text())
            if not isinstance(saved.get("manifest"), str) or saved.get("mode") not in MODES:
                raise ValueError("no manifest text or mode in it")
            self.data = saved
            log.info("deployment: restoring mode %s from %s", self.mode, self.state.deployment_json)
        except FileNotFoundError:
            self.data = self._default(self.initial_mode)
            log.info("deployment: first start, mode %s from %s", self.initial_mode, self.data["source"])
        except (OSError, ValueError, AttributeError) as exc:
            self.data = self._default(self.initial_mode)
            log.warning("deployment: %s is unreadable (%s); starting in mode %s from %s",
                        self.state.deployment_json, exc, self.initial_mode, self.data["source"])

    def restore(self, controller: Controller) -> None:
        """Hand the loaded deployment to `controller`. A saved manifest that no longer loads (the
        rules changed since) is replaced by the repository's manifest of the same mode."""
        self.controller = controller
        try:
            self.apply(self.data["manifest"], self.data["source"], keep_replicas=True)
        except ConfigError as exc:
            fresh = self._default(self.mode)
            log.warning("deployment: the saved manifest no longer loads (%s); applying %s instead", exc, fresh["source"])
            self.data = {**fresh, "replicas": self.data.get("replicas")}
            self.apply(self.data["manifest"], self.data["source"], keep_replicas=True)

    def apply(self, text: str, source: str, keep_replicas: bool = False) -> dict[str, Any]:
        """Apply a manifest. `kubectl apply` takes replicas from the manifest; a restore and a
        `rollout restart` keep the replicas the deployment was scaled to.

        Returns:
            The new template's hash and mode, and the replicas.
        """
        assert self.controller is not None, "restore() first"
        with self._lock:
            spec = deployment_from_manifest(text, source, self.addresses, self.data.get("restarted_at"))
            if keep_replicas and self.data.get("replicas") is not None:
                spec = replace(spec, replicas=int(self.data["replicas"]))
            log.info("apply: %s (mode %s, template %s)", source, spec.template.mode, spec.template.hash)
            self.controller.set_spec(spec)
            self.data.update(manifest=text, source=source, mode=spec.template.mode, replicas=spec.replicas)
            self._save()
        return {"template_hash": spec.template.hash, "mode": spec.template.mode, "replicas": spec.replicas}

    def scale(self, replicas: int) -> dict[str, Any]:
        assert self.controller is not None, "restore() first"
        if replicas < 0:
            raise ConfigError(f"replicas {replicas} is negative: scale to 0 or more")
        with self._lock:
            log.info("scale: replicas %d", replicas)
            self.controller.scale(replicas)
            self.data["replicas"] = replicas
            self._save()
        return {"replicas": replicas}

    def restart(self) -> dict[str, Any]:
        """`kubectl rollout restart`: a new restartedAt annotation, so a new template hash."""
        with self._lock:
            self.data["restarted_at"] = _now_rfc3339()
            log.info("rollout restart: restartedAt=%s", self.data["restarted_at"])
        return self.apply(self.data["manifest"], self.data["source"], keep_replicas=True)

    def _save(self) -> None:
        tmp = self.state.deployment_json.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2))
        os.replace(tmp, self.state.deployment_json)
