"""The HTML report opened in Debian's Chromium (Playwright, offline), and MLflow logging to a real store."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from tests.evaluate.conftest import half_right

from corral.cli.main import main
from corral.config import load_settings
from corral.evaluate import RunOptions, TargetSpec, run
from corral.evaluate.report import write_report
from corral.evaluate.tracking import log_runs

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(
    os.environ.get("CORRAL_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts")
)


def _two_runs(reg, qa, answering):
    options = RunOptions(progress=False, price_per_mtok=(1.0, 2.0))
    right = run(
        TargetSpec(
            url=answering(lambda b: "a" + str(b["messages"][-1]["content"])[1:]).url, upstream_model="m"
        ),
        qa,
        "exact_match,rouge,latency,cost",
        registry=reg,
        options=options,
    )
    half = run(
        TargetSpec(url=answering(half_right, latency_s=0.01).url, upstream_model="m"),
        qa,
        "exact_match,rouge,latency,cost",
        registry=reg,
        options=options,
    )
    return right, half


@pytest.mark.slow
def test_html_report_charts_carry_the_runs_values_in_chromium(reg, qa, answering, tmp_path):
    if not Path(CHROMIUM).is_file():
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    right, half = _two_runs(reg, qa, answering)
    write_report([right, half], tmp_path / "api.html")
    with pytest.raises(SystemExit) as info:
        main(["eval", "report", right.id, half.id[:10], "--html", str(tmp_path / "report.html")])
    assert info.value.code == 0
    page_file = tmp_path / "report.html"
    text = page_file.read_text()
    assert text == (tmp_path / "api.html").read_text().replace("api.html", "report.html")
    assert "<script src=" not in text and "Plotly" in text  # plotly.js is inlined; the page loads offline
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 2400})
        page.route(
            "**/*",
            lambda route: route.abort() if not route.request.url.startswith("file:") else route.continue_(),
        )
        page.goto(page_file.as_uri())
        page.wait_for_selector("#chart-exact_match g.point path", state="attached")
        bars = page.eval_on_selector("#chart-exact_match", "el => el.data[0].y")
        assert bars == [1.0, 0.5]
        assert page.locator("#chart-exact_match g.point").count() == 2
        scatter = page.eval_on_selector("#scatter-latency_p95", "el => [el.data[0].x, el.data[0].y]")
        assert scatter[1] == [1.0, 0.5]
        assert scatter[0] == pytest.approx(
            [right.summary["latency_p95"]["value"], half.summary["latency_p95"]["value"]]
        )
        assert page.locator("#scatter-cost g.scatterlayer path.point").count() == 2
        cells = page.locator("#summary td[data-metric='exact_match']").all_text_contents()
        assert cells[0].startswith("1 [") and cells[1].startswith("0.5 [")
        first_item = (
            page.locator("table.items").nth(1).locator("tr").nth(1).locator("td").nth(2).text_content()
        )
        assert first_item == "wrong"  # the half-right run's worst items come first
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "eval-report.png"), full_page=True)
        browser.close()
    assert (ARTIFACTS / "eval-report.png").stat().st_size > 10_000


@pytest.mark.slow
def test_mlflow_logs_params_metrics_intervals_and_the_report_to_a_real_store(
    reg, qa, answering, tmp_path, monkeypatch
):
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    right, _half = _two_runs(reg, qa, answering)
    (run_id,) = log_runs([right], load_settings())
    client = mlflow.MlflowClient(tracking_uri=uri)
    logged = client.get_run(run_id)
    assert logged.data.params["corral_run"] == right.id and logged.data.params["dataset"] == qa
    assert logged.data.metrics["exact_match"] == 1.0
    assert logged.data.metrics["exact_match_low"] == pytest.approx(right.summary["exact_match"]["low"])
    assert "rougeL_high" in logged.data.metrics
    assert [a.path for a in client.list_artifacts(run_id)] == ["report.html"]
    found = client.search_runs([logged.info.experiment_id], f"tags.`corral.eval_run` = '{right.id}'")
    assert [r.info.run_id for r in found] == [run_id]
