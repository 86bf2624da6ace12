"""The model commands of the CLI: train, models, promote, history, rollback, delete."""

import subprocess
import sys
from pathlib import Path

from woe_core import registry

ROOT = Path(__file__).resolve().parent.parent


def _cli(url, *args):
    return subprocess.run(
        [sys.executable, "-m", "woe_core", "--database-url", url, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_train_promote_history_rollback_delete(certified_engine):
    url = certified_engine.url.render_as_string(hide_password=False)
    keys = []
    for folds in ("3", "4", "2"):
        out = _cli(url, "train", "--cutoff", "2026-08-01", "--folds", folds, "--actor", "ann")
        assert out.returncode == 0, out.stderr
        assert "OOF AUC" in out.stdout and "[100%] write artifacts" in out.stderr
        keys.append(out.stdout.split(":", 1)[0])
    listing = _cli(url, "models").stdout
    assert all(k in listing for k in keys)
    first, second, third = keys
    assert _cli(url, "promote", first, "--reason", "first", "--actor", "pat").returncode == 0
    assert _cli(url, "promote", second, "--reason", "second", "--actor", "pat").returncode == 0
    assert registry.active_model_key(certified_engine) == second
    newest, oldest = _cli(url, "history").stdout.splitlines()[1:3]
    assert newest.split().index(first) < newest.split().index(second)  # from first to second
    assert "None" in oldest.split() and first in oldest.split()
    out = _cli(url, "rollback", "--reason", "second looked worse", "--actor", "pat")
    assert out.returncode == 0 and f"{first} is active again" in out.stdout
    assert registry.active_model_key(certified_engine) == first
    out = _cli(url, "delete", first)
    assert out.returncode == 1 and "error:" in out.stderr and first in out.stderr
    out = _cli(url, "delete", third)
    assert out.returncode == 0 and third not in set(registry.list_models(certified_engine)["model_key"])


def test_bad_train_and_promote_input_is_one_line_and_exit_1(certified_engine):
    url = certified_engine.url.render_as_string(hide_password=False)
    out = _cli(url, "train", "--cutoff", "2026-08-01", "--eps", "0", "--half-life", "-2")
    assert out.returncode == 1
    assert "eps must be a finite number > 0" in out.stderr and "half_life_days must be" in out.stderr
    assert "Traceback" not in out.stderr
    out = _cli(url, "train", "--cutoff", "yesterday")
    assert out.returncode == 2 and "expected an ISO date or datetime" in out.stderr
    out = _cli(url, "promote", "tom_aft_v1_20990101_000000", "--reason", "x")
    assert out.returncode == 1 and "tom_aft_v1_20990101_000000" in out.stderr
    out = _cli(url, "promote", "tom_aft_v1_20990101_000000", "--reason", " ")
    assert out.returncode == 1 and "reason must be a non-empty" in out.stderr
    out = _cli(url, "rollback", "--reason", "nothing to roll back")
    assert out.returncode == 1 and "no promotion has been recorded" in out.stderr
