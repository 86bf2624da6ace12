"""Benchmark of the app: time to first full render of each page, ``python -m bench.pages [--snapshots N] [--quick]`` from the repository root.

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

from .common import QUICK_SNAPSHOTS, ROOT, fresh_engine, load_certified

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
        if at.exception:  # a page that raised would be timed as if it had rendered
            raise SystemExit(f"page {name} raised: {at.exception[0].message}")
    return runs  # the first run with cold caches, then ``visits`` warm ones


def page_queries(first: str, second: str, listing: int) -> dict[str, str]:
    """Each page's query string: compare both models, promote the second, look up ``listing`` under the second."""
    return {
        "compare": f"?models={first},{second}",
        "promote": f"?model={second}",
        "lookup": f"?listing={listing}&model={second}",
    }


def server_times(url: str, queries: dict[str, str], visits: int) -> dict[str, list[float]]:
    """Server-side script time of every page (AppTest): a first run with cold caches, then ``visits`` runs."""
    return {
        name or "home": script_times(
            url, name or "home", dict(q.lstrip("?").split("=") for q in queries.get(name, "").split("&") if q), visits
        )
        for name in PAGES
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", type=int, default=1_000_000)
    parser.add_argument("--visits", type=int, default=3)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_SNAPSHOTS:,} snapshots, one visit per page, no one-line peer; the browser part only "
        "where chromium is installed",
    )
    args = parser.parse_args()
    if args.quick:
        args.snapshots, args.visits = QUICK_SNAPSHOTS, 1
    chromium = shutil.which("chromium")
    if chromium is None and not args.quick:
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
    queries = page_queries(first, second, listing)
    results: dict[str, list[float]] = {}
    floor: list[float] = []
    if chromium is not None:
        results, floor = browser_times(chromium, env, queries, args.visits, peer=not args.quick)
    server = server_times(url, queries, args.visits)

    print(
        f"\npage render benchmark: {loaded['socio_rows']:,} snapshots, 2 models; "
        + (f"headless Chromium, {args.visits} fresh visits per page" if results else "no chromium: server side only")
        + (" (--quick)" if args.quick else "")
        + "\n"
    )
    floor_median = statistics.median(floor) if floor else None
    print("| page | browser, first visit | browser, median | × one-line page | server script, median | target |")
    print("|---|---|---|---|---|---|")
    if floor_median:
        print(f"| peer: one-line Streamlit page | {floor[0]:.2f} s | {floor_median:.2f} s | 1.00× | – | – |")
    for name, runs in server.items():
        visits = results.get(name)
        med = statistics.median(visits) if visits else None
        browser = f"{visits[0]:.2f} s | {med:.2f} s" if visits and med is not None else "– | –"
        ratio = f"{med / floor_median:.2f}×" if med and floor_median else "–"
        print(f"| {name} | {browser} | {ratio} | {statistics.median(runs[1:]):.2f} s | ≤ 2 s |")
    return 0


def browser_times(
    chromium: str, env: dict, queries: dict[str, str], visits: int, peer: bool = True
) -> tuple[dict[str, list[float]], list[float]]:
    """Every page opened ``visits`` times in fresh tabs of a headless Chromium; with ``peer``, also a one-line page."""
    from playwright.sync_api import sync_playwright

    results: dict[str, list[float]] = {}
    floor: list[float] = []
    app, base = serve("app.py", env)
    servers = [app]
    if peer:
        floor_script = Path(tempfile.mkdtemp(prefix="woe_floor_")) / "floor.py"
        floor_script.write_text('import streamlit as st\nst.title("Floor")\n')
        floor_app, floor_base = serve(str(floor_script), env)
        servers.append(floor_app)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=chromium,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
            )
            visit_times(browser, base, PAGES[""], 1)  # the process's first session starts the engine
            if peer:
                visit_times(browser, floor_base, "Floor", 1)
                floor = visit_times(browser, floor_base, "Floor", visits)
            for path, title in PAGES.items():
                results[path or "home"] = visit_times(browser, f"{base}/{path}{queries.get(path, '')}", title, visits)
            browser.close()
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(timeout=30)
    return results, floor


if __name__ == "__main__":
    sys.exit(main())
