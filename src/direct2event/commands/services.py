"""``python -m direct2event services start|stop|status|env``: PostgreSQL (the Optuna study and
MLflow's backend) and an MLflow tracking server for sweep workers on several machines
(``make services``, ``make services-stop``)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from direct2event.glue import services
from direct2event.glue.runs import alive


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m direct2event services", description=services.__doc__
    )
    parser.add_argument("action", choices=["start", "stop", "status", "env"])
    parser.add_argument("--folder", default="data/services")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5433)
    parser.add_argument("--mlflow-port", type=int, default=5001)
    args = parser.parse_args(argv)
    if args.action == "start":
        try:
            svc = services.start(args.folder, args.host, args.pg_port, args.mlflow_port)
        except services.ServiceError as err:
            raise SystemExit(f"make services: {err}") from None
        print(
            f"PostgreSQL {svc.host}:{svc.pg_port} (pid {svc.postgres_pid}), MLflow server "
            f"{svc.tracking_uri} (pid {svc.mlflow_pid}). For the workers:"
        )
        print(f"source {Path(args.folder) / 'env.sh'}")
        return 0
    if args.action == "stop":
        print(
            "\n".join(f"stopped {s}" for s in services.stop(args.folder)) or "nothing was running"
        )
        return 0
    svc = services.load(args.folder)
    if svc is None:
        raise SystemExit(f"no services recorded in {args.folder}; run make services")
    if args.action == "env":
        print("\n".join(f"export {k}={v}" for k, v in svc.env().items()))
        return 0
    state = {
        **asdict(svc),
        "postgres_alive": alive(svc.postgres_pid),
        "mlflow_alive": alive(svc.mlflow_pid),
    }
    print(json.dumps(state, indent=2))
    return 0
