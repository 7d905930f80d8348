"""Monitoring: rollups of traces, reports, drift, alerts and the dashboard (served by the gateway)."""

from corral.monitor import alerts
from corral.monitor.drift import DriftPolicy, DriftReport
from corral.monitor.report import report, series
from corral.monitor.rollup import RollupJob
from corral.monitor.service import MonitorService
from corral.monitor.windows import drift_report as drift

__all__ = ["DriftPolicy", "DriftReport", "MonitorService", "RollupJob", "alerts", "drift", "report", "series"]
