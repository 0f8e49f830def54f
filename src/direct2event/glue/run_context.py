"""MLflow run-context provider (entry point ``mlflow.run_context_provider``).

Every MLflow run a process creates carries ``host`` and ``pid`` from its first database write,
so a process stopped before any project code ran still leaves a run that ``runs.reap`` can tell
is orphaned. Kept free of MLflow imports: MLflow loads it while it is itself being imported.
"""

from __future__ import annotations

import os
import socket


class ProcessContext:
    """Tags ``host`` and ``pid`` on every new run."""

    def in_context(self) -> bool:
        return True

    def tags(self) -> dict[str, str]:
        return {"host": socket.gethostname(), "pid": str(os.getpid())}
