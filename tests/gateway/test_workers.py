"""Worker supervision decisions, without processes: what a health probe means, what a log says."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.gateway.workers import WorkerProcess, last_output, probe_verdict

LIMITS = {"start_timeout_s": 300.0, "max_failed_probes": 5}


@pytest.mark.parametrize(
    ("healthy", "served", "failed", "age", "verdict"),
    [
        (True, False, 0, 1.0, "ready"),
        (False, False, 0, 10.0, "starting"),
        (False, False, 0, 301.0, "start_timeout"),
        # a worker that has served is never judged by its start-up timeout again
        (False, True, 0, 3600.0, "failing"),
        (False, True, 3, 3600.0, "failing"),
        (False, True, 4, 3600.0, "unhealthy"),  # the fifth failed probe in a row
        (True, True, 4, 3600.0, "ready"),
    ],
)
def test_one_failed_probe_of_a_serving_worker_never_restarts_it(healthy, served, failed, age, verdict):
    assert probe_verdict(healthy, served=served, failed_probes=failed, age_s=age, **LIMITS) == verdict


def test_the_last_error_is_the_last_error_line_of_this_run(tmp_path: Path):
    log = tmp_path / "worker.log"
    log.write_text("error: from an earlier run\n")
    worker = WorkerProcess("m@1", 1, log_file=log, log_offset=log.stat().st_size)
    assert last_output(worker) is None  # nothing written by this run yet
    with open(log, "a") as out:
        out.write("loading m@1\nerror: cannot load the tokenizer in /x: no tokenizer.json\nbye\n")
    assert last_output(worker) == "error: cannot load the tokenizer in /x: no tokenizer.json"
    with open(log, "a") as out:
        out.write("Killed\n")
    assert "cannot load the tokenizer" in str(last_output(worker))  # an error line beats the last line
    plain = WorkerProcess("m@1", 1, log_file=tmp_path / "other.log")
    (tmp_path / "other.log").write_text("Segmentation fault\n")
    assert last_output(plain) == "Segmentation fault"
