"""The built wheel: the package, its migrations as woe_core/sql, and the `woe` console script, usable from any folder."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    (built,) = out.glob("woe_anchor-*.whl")
    return built


def test_the_wheel_holds_the_package_its_migrations_and_the_console_script(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    shipped = sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("woe_core/sql/"))
    assert shipped == sorted(p.name for p in (ROOT / "sql").glob("V*.sql"))
    assert "woe_core/cli.py" in names and not any(n.startswith(("tests/", "bench/", "pages/")) for n in names)
    assert "woe = woe_core.cli:run" in entry_points


def test_the_installed_cli_migrates_from_any_folder(wheel, tmp_path, empty_engine):
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    url = empty_engine.url.render_as_string(hide_password=False)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from woe_core import cli, migrations; "
        "assert migrations.SQL_DIR.parent.name == 'woe_core', migrations.SQL_DIR; "
        "sys.exit(cli.main(['--database-url', sys.argv[2], 'init-db'], prog='woe'))"
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-c", code, str(site), url], cwd=elsewhere, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("applied: V0001__feature_stores.sql") and proc.stderr == ""
