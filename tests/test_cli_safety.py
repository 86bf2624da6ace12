"""The CLI in a terminal: one `error:` line per failure, no secret, no traceback, no raw control characters."""

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from modelkit import derived_model, handwritten_map, insert_model
from woe_core import cli, db
from woe_core.display import human_duration, markdown_text, terminal_text

ROOT = Path(__file__).resolve().parent.parent
KEY = "tom_aft_v1_20260601_000001"


def _url(engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://h.invalid/db?password=s3cr3t-in-query",
        "postgresql://h.invalid/db?sslpassword=s3cr3t-in-query&sslmode=require",
        "postgresql://user:s3cr3t-in-query@h.invalid:5432/db",
        "postgresql://user:s3cr3t-in-query@localhost:abc/db",
        "postgresql://user:s3cr3t-in-query@localhost:99999/db",
        "mysql://user:s3cr3t-in-query@h.invalid/db",
        "user:s3cr3t-in-query@h.invalid/db",
    ],
)
def test_no_secret_of_any_part_of_the_url_is_printed(capsys, url):
    code, out, err = _run(capsys, "--database-url", url, "status")
    assert code == 1 and out == ""
    line = _one_error_line(err)
    assert "s3cr3t" not in line


def test_a_non_numeric_port_is_named_without_a_traceback(capsys):
    code, _, err = _run(capsys, "--database-url", "postgresql://u:p@localhost:abc/db", "status")
    assert code == 1
    assert _one_error_line(err) == (
        "error: the port of database URL 'postgresql://...' must be a number from 1 to 65535, got 'abc'"
    )


def test_mask_url_hides_query_secrets_and_keeps_the_rest():
    masked = db.mask_url(
        "postgresql://u:pw1@h:5432/db?password=pw2&sslpassword=pw3&passfile=/etc/pgpass&sslmode=require"
    )
    assert "pw1" not in masked and "pw2" not in masked and "pw3" not in masked
    assert "u:***@h:5432/db" in masked and "sslmode=require" in masked and "passfile=" in masked


def test_an_unknown_listing_is_one_error_line(capsys, certified_engine):
    with certified_engine.begin() as conn:
        insert_model(conn, KEY, handwritten_map(), active=True)
    code, out, err = _run(capsys, "--database-url", _url(certified_engine), "score", "99999999")
    assert code == 1 and out == ""
    assert _one_error_line(err) == "error: listing 99999999 has no snapshot in the feature store"


def test_a_refused_promotion_is_one_error_line(capsys, certified_engine):
    with certified_engine.begin() as conn:
        insert_model(conn, KEY, handwritten_map(), active=True)
    code, out, err = _run(capsys, "--database-url", _url(certified_engine), "promote", KEY, "--reason", "again")
    assert code == 1 and out == ""
    line = _one_error_line(err)
    assert KEY in line and "not_active" in line


def test_a_malformed_command_line_is_one_error_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["score", "not-a-number"])
    assert exit_info.value.code == 2
    _, err = capsys.readouterr()
    assert "invalid int value: 'not-a-number'" in _one_error_line(err)


def test_control_characters_of_actor_reason_and_key_are_escaped(capsys, certified_engine):
    with certified_engine.begin() as conn:
        derived_model(conn, KEY)
    url = _url(certified_engine)
    actor, reason = "mal\x1b[31mlory\x07", "ok\x1b[2J\nforged line\u202e"
    code, out, _ = _run(capsys, "--database-url", url, "promote", KEY, "--actor", actor, "--reason", reason)
    assert code == 0, out
    code, out, _ = _run(capsys, "--database-url", url, "history")
    assert code == 0
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert len(out.splitlines()) == 2  # header and one row: the newline in the reason forged no line
    assert "mal\\x1b[31mlory\\x07" in out and "ok\\x1b[2J\\nforged line\\u202e" in out
    bad_key = "tom\x1b]0;title\x07"
    code, out, err = _run(capsys, "--database-url", url, "delete", bad_key)
    assert code == 1 and "\x1b" not in err and "\x07" not in err
    assert "tom\\x1b]0;title\\x07" in _one_error_line(err)


def test_a_closed_pipe_ends_quietly(certified_engine):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader went away before the first line, as `| head -0` does
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "woe_core", "--database-url", _url(certified_engine), "status"],
            cwd=ROOT,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 141 and proc.stderr == ""


def test_status_shows_the_certification_age_in_human_units(capsys, certified_engine):
    code, out, err = _run(capsys, "--database-url", _url(certified_engine), "status")
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith("certification:"))
    assert line.startswith("certification: fresh (#") and line.endswith(" s)") and ":00." not in line
    with certified_engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT count(*) FROM ml.woe_anchor_feature_store_t0_v1_v")).scalar_one()
    assert f"snapshots: {rows:,}" in out.splitlines()  # exact: the certification covers unchanged data


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.25, "0.2 s"),
        (9.5, "9.5 s"),
        (42, "42 s"),
        (418.88, "6 min 58 s"),
        (3720, "1 h 02 min"),
        (86400 * 2 + 3 * 3600 + 59, "2 d 3 h"),
        (-90, "-1 min 30 s"),
    ],
)
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text
    assert human_duration(timedelta(seconds=seconds)) == text


def test_terminal_and_markdown_text():
    assert terminal_text("Zoë 名前 ✓") == "Zoë 名前 ✓"
    assert terminal_text("a\x1b[2Jb\nc\x7f\x9b\u200b") == "a\\x1b[2Jb\\nc\\x7f\\x9b\\u200b"
    assert markdown_text("**bold** [x](http://evil) <b>h</b> `c` :red[x] $x$ ![i](u) ~~s~~") == (
        "\\*\\*bold\\*\\* \\[x\\](http://evil) \\<b\\>h\\</b\\> \\`c\\` \\:red\\[x\\] \\$x\\$ !\\[i\\](u) \\~\\~s\\~\\~"
    )
    assert markdown_text("model_key _x_ a: b") == "model_key \\_x\\_ a: b"
    assert markdown_text("# h") == "\\# h" and markdown_text("12) x") == "12\\) x" and markdown_text("- a") == "\\- a"
    assert markdown_text("a\nb") == "a\\\\nb"


def test_a_plain_cli_call_prints_no_warning(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "WOE_DATABASE_URL")}
    env["WOE_DATA_DIR"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "woe_core", "init-db"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and "Warning" not in proc.stdout
