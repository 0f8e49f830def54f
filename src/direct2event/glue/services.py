"""The scale-out services: one PostgreSQL (the Optuna study and MLflow's backend store) and one
MLflow tracking server that also serves the artifacts, for sweep workers on several machines.

    python -m direct2event services start [--folder data/services] [--pg-port 5433] [--mlflow-port 5001]
    python -m direct2event services status | env | stop

PostgreSQL comes from the ``pgserver`` wheel (its binaries; run as the user ``pgserver`` when
started by root, since PostgreSQL refuses root), listening on ``--host`` (127.0.0.1 by default)
with password authentication. The password is generated once and kept only in ``<folder>/pgpass``
(mode 600, libpq's password-file format): every client (Optuna, the MLflow server) finds it
through ``PGPASSFILE``, so no URL, command line or log carries it. ``<folder>/env.sh`` holds the
three lines a worker needs. ``stop`` ends what ``start`` started, by the pids in
``<folder>/services.json``.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from direct2event.glue.runs import alive

USER = "d2e"  # the PostgreSQL role the project's clients log in as
DATABASES = ("optuna", "mlflow")
# each worker holds a few pooled connections (its Optuna storage, the study check), the MLflow
# server a pool per worker process: PostgreSQL's default of 100 is reached with some dozens
MAX_CONNECTIONS = 500
_PG_SYSTEM_USER = "pgserver"  # pgserver's convention for running PostgreSQL under root


class ServiceError(RuntimeError):
    """A service that cannot start, or cannot be reached; the message says what to check."""


@dataclass(frozen=True)
class Services:
    """Where the services of one folder listen and how clients reach them."""

    folder: str
    host: str
    pg_port: int
    mlflow_port: int
    postgres_pid: int | None = None
    mlflow_pid: int | None = None

    @property
    def storage_url(self) -> str:
        """The Optuna storage (``tuning.storage``); the password comes from ``PGPASSFILE``."""
        return f"postgresql+psycopg2://{USER}@{self.host}:{self.pg_port}/optuna"

    @property
    def backend_url(self) -> str:
        """MLflow's backend store (the same PostgreSQL, its own database)."""
        return f"postgresql+psycopg2://{USER}@{self.host}:{self.pg_port}/mlflow"

    @property
    def tracking_uri(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def pgpass(self) -> Path:
        return Path(self.folder) / "pgpass"

    def env(self) -> dict[str, str]:
        """What a worker exports: the MLflow server, the password file, the study's storage."""
        return {
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "PGPASSFILE": str(self.pgpass.resolve()),
            "TUNING_STORAGE": self.storage_url,
        }


def _state_file(folder: Path) -> Path:
    return folder / "services.json"


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _pg_bin(name: str) -> str:
    try:
        with warnings.catch_warnings():  # platformdirs: XDG_RUNTIME_DIR unset on servers
            warnings.simplefilter("ignore")
            from pgserver._commands import POSTGRES_BIN_PATH
    except ImportError:
        raise ServiceError(
            "PostgreSQL comes from the pgserver package, which is not installed: "
            "pip install -e '.[services]' (make services does it)."
        ) from None
    return str(POSTGRES_BIN_PATH / name)


def _run_as() -> dict[str, str]:
    """``subprocess`` keyword arguments running PostgreSQL as a non-root user when we are root."""
    if os.geteuid() != 0:
        return {}
    with warnings.catch_warnings():  # platformdirs: XDG_RUNTIME_DIR unset on servers
        warnings.simplefilter("ignore")
        from pgserver.utils import ensure_user_exists

    ensure_user_exists(_PG_SYSTEM_USER)
    return {"user": _PG_SYSTEM_USER, "group": _PG_SYSTEM_USER}


def _give_to(path: Path, who: dict[str, str]) -> None:
    """Let PostgreSQL's user own ``path`` and reach it (every parent traversable)."""
    if not who:
        return
    shutil.chown(path, who["user"], who["group"])
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005 and parent != Path("/"):
            parent.chmod(mode | 0o005)


def _check(cmd: list[str], what: str, log: Path | None = None, **kwargs: object) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)  # noqa: S603 (our own argv)
    if done.returncode:
        tail = log.read_text()[-2000:] if log and log.exists() else ""
        raise ServiceError(f"{what} failed ({done.returncode}): {done.stderr.strip()}\n{tail}")


def _start_postgres(folder: Path, host: str, port: int) -> int:
    who = _run_as()
    data = folder / "postgres"
    log = folder / "postgres.log"
    if not (data / "PG_VERSION").exists():
        if data.exists():
            raise ServiceError(
                f"{data} exists but holds no PostgreSQL cluster; remove it (or choose another "
                "--folder) to create a new one."
            )
        password = secrets.token_urlsafe(24)
        data.mkdir(parents=True)
        pwfile = folder / ".initdb-password"
        pwfile.write_text(password + "\n")
        for path in (folder, data, pwfile):
            _give_to(path, who)
        try:
            _check(
                [
                    _pg_bin("initdb"),
                    "-D",
                    str(data),
                    "-U",
                    USER,
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                ],
                "initdb",
                **who,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        # initdb allows only loopback clients; workers on other machines (start --host <address>)
        # log in with the password from any address
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write("host all all all scram-sha-256\n")
        pgpass = folder / "pgpass"
        pgpass.touch(mode=0o600)
        pgpass.write_text(f"*:*:*:{USER}:{password}\n")
    log.touch()
    _give_to(log, who)
    # unix sockets off (-k ''): clients use TCP on host:port, where the password is required
    _check(
        [
            _pg_bin("pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-w",
            "-t",
            "30",
            "-o",
            f"-h {host} -p {port} -k '' -c max_connections={MAX_CONNECTIONS}",
            "start",
        ],
        "PostgreSQL (pg_ctl start)",
        log,
        **who,
    )
    return int((data / "postmaster.pid").read_text().split()[0])


def _create_databases(host: str, port: int, pgpass: Path) -> None:
    import psycopg2

    os.environ.setdefault("PGPASSFILE", str(pgpass.resolve()))
    conn = psycopg2.connect(
        host=host,
        port=port,
        user=USER,
        dbname="postgres",
        connect_timeout=10,
        passfile=str(pgpass.resolve()),
    )
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            for name in DATABASES:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


def health(uri: str, timeout: float = 5.0) -> str | None:
    """None when the MLflow server at ``uri`` answers its health check, else why not. A URI
    with credentials (``http://user:password@host:port``) is asked with them as HTTP basic
    auth, as MLflow's client does (urllib would take ``user:password@host`` for the host)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return f"{uri} is not an http(s) URL"
    netloc = parts.hostname or ""
    if ":" in netloc:  # IPv6
        netloc = f"[{netloc}]"
    if parts.port is not None:
        netloc += f":{parts.port}"
    url = urllib.parse.urlunsplit(
        (parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", "")
    )
    request = urllib.request.Request(url)  # noqa: S310 (http(s) checked above)
    if parts.username is not None:
        token = (
            f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        )
        request.add_header("Authorization", "Basic " + base64.b64encode(token.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            return None if answer.status == 200 else f"HTTP {answer.status}"
    except (urllib.error.URLError, OSError) as err:
        return str(getattr(err, "reason", err))


def _start_mlflow(svc: Services, timeout: float) -> int:
    folder = Path(svc.folder)
    log = (folder / "mlflow.log").open("ab")
    artifacts = folder / "mlflow-artifacts"
    artifacts.mkdir(exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        svc.backend_url,
        "--artifacts-destination",
        str(artifacts.resolve()),
        "--serve-artifacts",
        "--host",
        svc.host,
        "--port",
        str(svc.mlflow_port),
        "--workers",
        "2",
    ]
    env = {**os.environ, "PGPASSFILE": str(svc.pgpass.resolve())}
    # its own session: stop() ends the server and its workers as one process group
    proc = subprocess.Popen(  # noqa: S603 (our own argv)
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(
                f"The MLflow server exited ({proc.returncode}); see {folder / 'mlflow.log'}"
            )
        if health(svc.tracking_uri, timeout=1) is None:
            return proc.pid
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    raise ServiceError(
        f"The MLflow server did not answer within {timeout:.0f} s; see {folder / 'mlflow.log'}"
    )


def load(folder: Path | str = "data/services") -> Services | None:
    """The services recorded in ``folder`` (None when none were started there)."""
    path = _state_file(Path(folder))
    return Services(**json.loads(path.read_text())) if path.exists() else None


def start(
    folder: Path | str = "data/services",
    host: str = "127.0.0.1",
    pg_port: int = 5433,
    mlflow_port: int = 5001,
    timeout: float = 120.0,
) -> Services:
    """Start PostgreSQL and the MLflow server (creating the cluster and its two databases the
    first time); a no-op when both already run from ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    running = load(folder)
    if running and alive(running.postgres_pid) and alive(running.mlflow_pid):
        return running
    if running:  # a half-running set: end what is left, start both again
        stop(folder)
    for port, flag in ((pg_port, "--pg-port"), (mlflow_port, "--mlflow-port")):
        if not _port_free(host, port):
            raise ServiceError(
                f"Port {port} on {host} is taken; choose another with {flag} (make services "
                "PG_PORT=... MLFLOW_PORT=...)."
            )
    svc = Services(str(folder), host, pg_port, mlflow_port)
    pg_pid = _start_postgres(folder, host, pg_port)
    svc = Services(str(folder), host, pg_port, mlflow_port, postgres_pid=pg_pid)
    _state_file(folder).write_text(json.dumps(asdict(svc), indent=2))
    try:
        _create_databases(host, pg_port, svc.pgpass)
        ml_pid = _start_mlflow(svc, timeout)
    except BaseException:
        stop(folder)
        raise
    svc = Services(str(folder), host, pg_port, mlflow_port, pg_pid, ml_pid)
    _state_file(folder).write_text(json.dumps(asdict(svc), indent=2))
    lines = [f"export {k}={v}" for k, v in svc.env().items()]
    (folder / "env.sh").write_text("\n".join(lines) + "\n")
    return svc


def _end(pid: int | None, sig: signal.Signals, group: bool, wait_s: float) -> bool:
    """Send ``sig`` and wait; SIGKILL after ``wait_s``. True when something was running."""
    if not alive(pid):
        return False
    try:
        (os.killpg if group else os.kill)(pid, sig)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + wait_s
    while alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.1)
    if alive(pid):
        (os.killpg if group else os.kill)(pid, signal.SIGKILL)
    while alive(pid):
        _reap(pid)
        time.sleep(0.05)
    _reap(pid)
    return True


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status when it is this process's child (no zombie left)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop(folder: Path | str = "data/services") -> list[str]:
    """End the MLflow server (its process group) and PostgreSQL (fast shutdown), by the pids
    ``start`` recorded; returns what was stopped."""
    svc = load(folder)
    if svc is None:
        return []
    stopped = []
    if _end(svc.mlflow_pid, signal.SIGTERM, group=True, wait_s=15):
        stopped.append(f"mlflow server (pid {svc.mlflow_pid})")
    if _end(svc.postgres_pid, signal.SIGINT, group=False, wait_s=30):  # SIGINT: fast shutdown
        stopped.append(f"postgresql (pid {svc.postgres_pid})")
    _state_file(Path(folder)).unlink(missing_ok=True)
    return stopped
