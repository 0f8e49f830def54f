"""Screenshots of the MLflow UI as a user sees it: the runs table in its Results view, a run,
the compare view of two runs of different datasets, the registry and E's champion version
(headless Chromium).

    python -m direct2event screenshots [--out docs/img] [--port 5055]      (make screenshots)

Reads the project's ``mlflow.db`` (or ``MLFLOW_TRACKING_URI``), starts ``mlflow ui`` on
127.0.0.1, takes the pictures, and stops the server it started.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from direct2event.glue import tracking
from direct2event.glue.runs import EXPERIMENT


def chromium() -> str:
    """The headless browser's executable, or a message saying how to install it."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit(
        "No Chromium found: install it (Debian/Ubuntu: apt-get install chromium) and run again."
    )


def wait_for(url: str, timeout_s: float = 60) -> None:
    """Until ``url`` answers (the server started), or fail naming it."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (our own 127.0.0.1 server)
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"The MLflow UI did not answer at {url} within {timeout_s:.0f} s.")


def shoot(browser: str, url: str, out: Path, size: str = "2200,1100") -> Path:
    """One page, rendered for a while (the UI is a single-page app that loads data)."""
    subprocess.run(  # noqa: S603 (fixed arguments)
        [
            browser,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={size}",
            "--virtual-time-budget=20000",
            f"--screenshot={out}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out


def pages(base: str) -> dict[str, str]:
    """The pages: the experiment as it opens, its runs table, the latest run (its description is
    the headline), two datasets' latest runs compared, E's champion version."""
    client = MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        raise SystemExit(
            "No direct2event experiment in the tracking store: run the pipeline first."
        )
    exp = experiment.experiment_id
    finished = client.search_runs(
        [exp],
        filter_string="attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )
    latest: dict[str, str] = {}
    for run in finished:  # pipeline runs (a seed's run too), not trials or a study's summary run
        dataset, kind = run.data.tags.get("dataset", ""), run.data.tags.get("kind", "")
        if dataset and "," not in dataset and kind not in ("tuning_trial", "seed_study"):
            latest.setdefault(dataset, run.info.run_id)
    chosen = list(latest.values())[:2]
    compare = urllib.parse.quote(json.dumps(chosen))
    mode = "?workflowType=machine_learning"  # MLflow 3's UI opens in GenAI mode otherwise
    found = {
        "mlflow_runs": tracking.ui_url(base, exp),  # the saved Results view
        "mlflow_run": f"{base}/#/experiments/{exp}/runs/{chosen[0]}{mode}" if chosen else "",
        "mlflow_compare": f"{base}/#/compare-runs?runs={compare}&experiments="
        + urllib.parse.quote(json.dumps([exp])),
    }
    for dataset in latest:  # E's champion, else its newest version
        name = f"{dataset}-event"
        try:
            version = client.get_model_version_by_alias(name, "champion").version
        except mlflow.exceptions.MlflowException:
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                continue
            version = max(int(v.version) for v in versions)
        found["mlflow_model_version"] = f"{base}/#/models/{name}/versions/{version}"
        break
    found["mlflow_models"] = f"{base}/#/models"
    return found


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m direct2event screenshots", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--port", type=int, default=5055)
    parser.add_argument(
        "--size", default="2200,1100", help="window WIDTH,HEIGHT (the result columns need width)"
    )
    args = parser.parse_args(argv)
    uri = tracking.use_configured_store()
    browser = chromium()
    base = f"http://127.0.0.1:{args.port}"
    server = subprocess.Popen(  # noqa: S603 (this interpreter's mlflow)
        tracking.ui_command(uri, args.port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(base)
        args.out.mkdir(parents=True, exist_ok=True)
        for name, url in pages(base).items():
            if not url:
                continue
            path = shoot(browser, url, args.out / f"{name}.png", args.size)
            print(f"{path}  <- {url}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0
