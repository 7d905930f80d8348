"""The web dashboard, mounted by the gateway under /dashboard."""

from corral.monitor.dashboard.app import Dashboard

__all__ = ["Dashboard"]
