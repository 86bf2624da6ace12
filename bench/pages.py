"""Benchmark of the app: time to first full render of each page, ``python bench/pages.py [--snapshots N]``.

On N demo snapshots with two trained models (one active), the app runs as
``streamlit run app.py`` and a headless Chromium (Debian's package) opens each
page in a fresh tab, timing from navigation until the page's script has run to
the end and its title is visible (median of 3 visits per page; the first visit
of each page also counts, reported separately). Nothing asserts a time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime

import sqlalchemy as sa

from common import fresh_engine, load_certified
from woe_core import promote, train
from woe_core.db import PROJECT_ROOT

PAGES = {"": "WOE anchor model", "train": "Train a candidate", "compare": "Compare models",
         "promote": "Promote a model", "certification": "Data certification", "lookup": "Score lookup"}


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

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "WOE_DATABASE_URL": engine.url.render_as_string(hide_password=False)}
    app = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                            "--server.port", str(port)], cwd=PROJECT_ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    results = {}
    try:
        for _ in range(240):
            try:
                if urllib.request.urlopen(f"{base}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.25)
        from playwright.sync_api import sync_playwright

        queries = {"compare": f"?models={first},{second}", "promote": f"?model={second}",
                   "lookup": f"?listing={listing}&model={second}"}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
            warm = browser.new_page()
            warm.goto(base)  # the process's first session starts the engine; not counted
            warm.wait_for_selector('[data-test-script-state="notRunning"]', timeout=120_000)
            warm.close()
            for path, title in PAGES.items():
                runs = []
                for _ in range(args.visits):
                    page = browser.new_page(viewport={"width": 1400, "height": 1200})
                    t = time.perf_counter()
                    page.goto(f"{base}/{path}{queries.get(path, '')}")
                    page.get_by_role("heading", name=title).first.wait_for(timeout=120_000)
                    page.wait_for_selector('[data-test-script-state="notRunning"]', timeout=120_000)
                    runs.append(time.perf_counter() - t)
                    page.close()
                results[path or "home"] = runs
            browser.close()
    finally:
        app.terminate()
        app.wait(timeout=30)

    print(f"\npage render benchmark: {loaded['socio_rows']:,} snapshots, 2 models; headless Chromium, "
          f"{args.visits} fresh visits per page\n")
    print("| page | first visit | median | target |")
    print("|---|---|---|---|")
    for name, runs in results.items():
        print(f"| {name} | {runs[0]:.2f} s | {statistics.median(runs):.2f} s | ≤ 2 s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
