"""Benchmark of the app: time to first full render of each page, ``python -m bench.pages [--snapshots N]`` from the repository root.

On N demo snapshots with two trained models (one active), the app runs as
``streamlit run app.py`` and a headless Chromium (Debian's package) opens each
page in a fresh tab, timing from navigation until the page's script has run to
the end and its title is visible (median of 3 visits; the first visit is also
shown). Beside it, in the same run: the server-side script time of each page
(Streamlit's AppTest, median of 3) and, as the peer, a one-line Streamlit page
(``st.title``) served and timed the same way, which is the floor any page pays
for loading the frontend and opening its session. Nothing asserts a time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from woe_core import promote, train

from .common import ROOT, fresh_engine, load_certified

PAGES = {
    "": "WOE anchor model",
    "train": "Train a candidate",
    "compare": "Compare models",
    "promote": "Promote a model",
    "certification": "Data certification",
    "lookup": "Score lookup",
}


def serve(script: str, env: dict) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", script, "--server.headless", "true", "--server.port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if urllib.request.urlopen(f"{base}/_stcore/health", timeout=1).read() == b"ok":
                break
        except OSError:
            time.sleep(0.25)
    return proc, base


def visit_times(browser, url: str, title: str, visits: int) -> list[float]:
    runs = []
    for _ in range(visits):
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        t = time.perf_counter()
        page.goto(url)
        page.get_by_role("heading", name=title).first.wait_for(timeout=120_000)
        page.wait_for_selector('[data-test-script-state="notRunning"]', timeout=120_000)
        runs.append(time.perf_counter() - t)
        page.close()
    return runs


def script_times(env_url: str, name: str, query: dict, visits: int) -> list[float]:
    from streamlit.testing.v1 import AppTest

    os.environ["WOE_DATABASE_URL"] = env_url
    runs = []
    for _ in range(visits + 1):  # the first run warms the engine cache
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.query_params.update(query)
        at.switch_page(f"pages/{name}.py")
        t = time.perf_counter()
        at.run()
        runs.append(time.perf_counter() - t)
    return runs[1:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", type=int, default=1_000_000)
    parser.add_argument("--visits", type=int, default=3)
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("Debian's chromium is needed: apt-get install chromium")

    engine = fresh_engine()
    loaded = load_certified(engine, args.snapshots)
    cutoff = datetime(2026, 7, 1, tzinfo=UTC)
    first = train.train(engine, train.TrainParams(cutoff, 90.0, 1.0, 5), "bench").model_key
    second = train.train(engine, train.TrainParams(cutoff, 30.0, 2.0, 5), "bench").model_key
    promote.promote(engine, first, "bench", "benchmark")
    with engine.connect() as conn:
        listing = conn.execute(sa.text("SELECT min(listing_id) FROM ml.socio_market_snapshots")).scalar_one()

    url = engine.url.render_as_string(hide_password=False)
    env = {**os.environ, "WOE_DATABASE_URL": url}
    queries = {
        "compare": f"?models={first},{second}",
        "promote": f"?model={second}",
        "lookup": f"?listing={listing}&model={second}",
    }
    floor_script = Path(tempfile.mkdtemp(prefix="woe_floor_")) / "floor.py"
    floor_script.write_text('import streamlit as st\nst.title("Floor")\n')
    from playwright.sync_api import sync_playwright

    results, floor = {}, []
    app, base = serve("app.py", env)
    floor_app, floor_base = serve(str(floor_script), env)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=chromium,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
            )
            visit_times(browser, base, PAGES[""], 1)  # the process's first session starts the engine
            visit_times(browser, floor_base, "Floor", 1)
            floor = visit_times(browser, floor_base, "Floor", args.visits)
            for path, title in PAGES.items():
                results[path or "home"] = visit_times(
                    browser, f"{base}/{path}{queries.get(path, '')}", title, args.visits
                )
            browser.close()
    finally:
        for proc in (app, floor_app):
            proc.terminate()
            proc.wait(timeout=30)
    server = {
        name: script_times(
            url, name, dict(q.lstrip("?").split("=") for q in queries.get(name, "").split("&") if q), args.visits
        )
        for name in results
    }

    print(
        f"\npage render benchmark: {loaded['socio_rows']:,} snapshots, 2 models; headless Chromium, "
        f"{args.visits} fresh visits per page\n"
    )
    floor_median = statistics.median(floor)
    print("| page | browser, first visit | browser, median | × one-line page | server script, median | target |")
    print("|---|---|---|---|---|---|")
    print(f"| peer: one-line Streamlit page | {floor[0]:.2f} s | {floor_median:.2f} s | 1.00× | – | – |")
    for name, runs in results.items():
        med = statistics.median(runs)
        print(
            f"| {name} | {runs[0]:.2f} s | {med:.2f} s | {med / floor_median:.2f}× | "
            f"{statistics.median(server[name]):.2f} s | ≤ 2 s |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
