"""Reloading the deployments of corral.yaml while serving: when the file changes, or on SIGHUP."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corral.errors import CorralError

log = logging.getLogger("corral.gateway.reload")


class ConfigReloader:
    """Watches one corral.yaml; a changed (and valid) `deployments:` section is seeded into the store.

    The store watcher then rebuilds the routes within one poll, as for an admin change. Only
    deployments are reloaded: other sections need a restart, and a reload that changes them says so.
    A file that does not load, or names a target that cannot serve, is refused with the reason
    and the deployments stay as they were.
    """

    def __init__(
        self,
        path: str | Path,
        current: Any,
        apply: Callable[[Any], None],
        check: Callable[[Any], None],
        interval_s: float,
    ) -> None:
        self.path = Path(path)
        self.current = current  # the Settings last applied
        self.apply = apply  # seeds new settings' deployments into the store
        self.check = check  # raises when a deployment's target cannot serve
        self.interval_s = interval_s
        self._mtime = self._stamp()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _stamp(self) -> tuple[float, int] | None:
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return (stat.st_mtime, stat.st_size)

    def request(self, *_: Any) -> None:
        """Reload now (the SIGHUP handler): safe to call from a signal handler."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="corral-config-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            forced = self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            stamp = self._stamp()
            if forced or (stamp is not None and stamp != self._mtime):
                self._mtime = stamp
                self.reload()

    def reload(self) -> bool:
        """Load the file again and apply its deployments; False (logged) when it is refused."""
        from corral.config import load_settings

        try:
            fresh = load_settings(self.path)
            self.check(fresh)
        except CorralError as exc:
            log.error("%s not reloaded: %s; the deployments stay as they were", self.path, exc)
            return False
        self.apply(fresh)
        changed = [
            name
            for name in type(fresh).model_fields
            if name not in ("deployments", "source") and getattr(fresh, name) != getattr(self.current, name)
        ]
        if changed:
            log.warning(
                "%s: only deployments are reloaded; restart corral serve to apply the changes to: %s",
                self.path,
                ", ".join(changed),
            )
        log.info(
            "reloaded deployments from %s: %s", self.path, ", ".join(sorted(fresh.deployments)) or "none"
        )
        self.current = fresh
        return True


def watch_config(parts: Any) -> ConfigReloader | None:
    """Reload corral.yaml's deployments (of these gateway parts) on change and on SIGHUP; None without a file."""
    import signal

    from corral.gateway.deployments import check_policies, check_targets

    settings = parts.settings
    if not settings.source:
        return None
    source, resolve, deployments = settings.source, parts.registry.models.resolve, parts.routes.deployments

    def check(fresh: Any) -> None:
        check_policies(fresh.deployments, deployments.policies, source)
        check_targets(fresh.deployments, resolve, source)

    reloader = ConfigReloader(
        source,
        settings,
        apply=lambda fresh: deployments.seed(fresh.deployments),
        check=check,
        interval_s=max(settings.gateway.deployments_poll_s, 0.2),
    )
    if hasattr(signal, "SIGHUP") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGHUP, reloader.request)
    reloader.start()
    return reloader
