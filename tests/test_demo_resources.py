"""Loading the demo when disk space runs out, for real (the base tables on a 20 MB tmpfs
tablespace: needs the embedded server and root to mount it, skipped otherwise), and when
the server ends the loading connection.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import CITUS_TARGET

from woe_core import certify, demo
from woe_core.errors import DatabaseUnavailable, OutOfResources

ROOT = Path(__file__).resolve().parent.parent
TABLES = (demo.SOCIO_TABLE, demo.IMAGE_TABLE)


def _counts(engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return (
            conn.execute(sa.text(f"SELECT count(*) FROM {demo.SOCIO_TABLE}")).scalar_one(),
            conn.execute(sa.text(f"SELECT count(*) FROM {demo.IMAGE_TABLE}")).scalar_one(),
        )


@pytest.fixture
def tiny_disk(certified_engine):
    """The two base tables moved to a tablespace on a fresh 20 MB tmpfs, then certified again."""
    engine = certified_engine
    if os.environ.get("WOE_TEST_DATABASE_URL"):
        pytest.skip("needs the embedded server: the tablespace folder must be on this machine")
    if CITUS_TARGET:
        pytest.skip(
            "Citus refuses ALTER TABLE ... SET TABLESPACE on a distributed table; a full disk is tried on one node"
        )
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    with engine.connect() as conn:
        data_dir = conn.execute(sa.text("SHOW data_directory")).scalar_one()
    folder = Path(tempfile.mkdtemp(prefix="woe_tiny_disk_"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode:
        folder.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    space = "woe_tiny_" + uuid.uuid4().hex[:8]
    owner = os.stat(data_dir)
    os.chown(folder, owner.st_uid, owner.st_gid)  # the server's own OS user must own a tablespace folder
    admin = engine.execution_options(isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE TABLESPACE {space} LOCATION '{folder}'"))
            for table in TABLES:
                conn.execute(sa.text(f"ALTER TABLE {table} SET TABLESPACE {space}"))
        assert certify.certify(engine, "test-certifier").passed
        yield engine, folder
    finally:
        with admin.connect() as conn:
            for table in TABLES:
                conn.execute(sa.text(f"ALTER TABLE {table} SET TABLESPACE pg_default"))
            conn.execute(sa.text(f"DROP TABLESPACE {space}"))
        subprocess.run(["umount", str(folder)], check=True)
        folder.rmdir()


def test_a_load_larger_than_the_free_space_is_refused_before_it_starts(tiny_disk):
    engine, folder = tiny_disk
    before, cert = _counts(engine), certify.status(engine)
    check = demo.space_check(engine, 100_000)
    assert check is not None and check.short == [str(folder)], check
    assert check.needed[str(folder)] > check.free[str(folder)]
    with pytest.raises(OutOfResources, match=rf"not enough disk space .* {folder}: needs about .* [MG]B, .* free"):
        demo.load_demo(engine, 100_000)
    assert _counts(engine) == before
    after = certify.status(engine)
    assert after.fresh and after.latest.certification_id == cert.latest.certification_id

    url = engine.url.render_as_string(hide_password=False)
    cli = subprocess.run(
        [sys.executable, "-m", "woe_core", "--database-url", url, "demo", "--listings", "100000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 1, cli
    assert cli.stderr.startswith("error: not enough disk space for a demo of 100,000 listings"), cli.stderr
    assert str(folder) in cli.stderr and "Nothing was loaded" in cli.stderr
    assert "Traceback" not in cli.stderr


def test_a_disk_that_fills_up_during_the_load_leaves_the_certified_data_as_they_were(tiny_disk):
    engine, folder = tiny_disk
    before, cert = _counts(engine), certify.status(engine)
    with pytest.raises(OutOfResources) as caught:
        demo.load_demo(engine, 100_000, check_resources=False)  # skip the estimate: fill the disk for real
    message = str(caught.value)
    assert message.startswith("the database server ran out of disk space while loading a demo of 100,000 listings")
    assert "could not extend file" in message and "rolled back" in message, message
    assert f"in {folder} (" in message  # where and how much is needed
    # Nothing of the failed load is visible: the old rows, still certified by the same certification.
    assert _counts(engine) == before
    after = certify.status(engine)
    assert after.fresh and after.latest.certification_id == cert.latest.certification_id
    # A certification now certifies exactly the old rows, and the disk has its space back.
    again = certify.certify(engine, "test-certifier")
    assert again.passed and again.row_count == before[0]
    assert demo.load_demo(engine, 300)["socio_rows"] > 300


def test_a_load_whose_server_connection_dies_commits_nothing(certified_engine):
    engine = certified_engine
    before, cert = _counts(engine), certify.status(engine)
    failure: list[BaseException] = []

    def load() -> None:
        try:
            demo.load_demo(engine, 300_000)
        except BaseException as exc:  # kept for the assertions below
            failure.append(exc)

    loader = threading.Thread(target=load)
    loader.start()
    killer = engine.execution_options(isolation_level="AUTOCOMMIT")
    with killer.connect() as conn:
        for _ in range(600):  # wait until the load is copying, then end its backend as an administrator would
            killed = (
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND query LIKE 'COPY ml.%' AND pid <> pg_backend_pid()"
                    )
                )
                .scalars()
                .all()
            )
            if killed:
                break
            time.sleep(0.02)
    loader.join(timeout=300)
    assert killed == [True]
    assert len(failure) == 1 and isinstance(failure[0], DatabaseUnavailable), failure
    assert str(failure[0]).startswith("lost the database server while loading a demo of 300,000 listings")
    assert "Nothing of this load was committed" in str(failure[0])
    assert _counts(engine) == before
    after = certify.status(engine)
    assert after.fresh and after.latest.certification_id == cert.latest.certification_id


# Runs `woe demo` with its address space capped, once everything is imported, to 30 MB more
# than it maps then: enough to connect and migrate, not to generate a chunk.
_CAPPED_DEMO = """
import resource, sys
from woe_core import cli, demo
mapped = demo.proc_kib("/proc/self/status", "VmSize") * 1024
resource.setrlimit(resource.RLIMIT_AS, (mapped + 30 * 2**20, resource.RLIM_INFINITY))
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_demo_that_runs_out_of_memory_says_so_and_commits_nothing(certified_engine):
    engine = certified_engine
    before, cert = _counts(engine), certify.status(engine)
    url = engine.url.render_as_string(hide_password=False)
    done = subprocess.run(
        [sys.executable, "-c", _CAPPED_DEMO, "--database-url", url, "demo", "--listings", "300000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done
    assert done.stderr.startswith(
        "error: this process ran out of memory generating chunk 1 of a demo of 300,000 listings"
    ), done.stderr
    assert "The load was rolled back" in done.stderr and "Traceback" not in done.stderr
    assert _counts(engine) == before
    after = certify.status(engine)
    assert after.fresh and after.latest.certification_id == cert.latest.certification_id
