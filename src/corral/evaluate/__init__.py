"""Evaluation: metrics, runner, judge, statistics and gates."""
