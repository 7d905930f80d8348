"""Monitoring: aggregates, drift, feedback, alerts, dashboard."""
