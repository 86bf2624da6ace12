"""Training runs in the background of a long-lived process (the app), polled by id.

A run is a thread of the server process, so it survives a reviewer navigating
away or closing the tab; its progress, result or error stay readable until the
process exits. Parameters are validated before the thread starts, so a bad value
is reported at once and nothing runs.
"""

from __future__ import annotations

import itertools
import threading
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from . import train
from .errors import InvalidParameter, WoeError
from .identity import require_actor


@dataclass
class Job:
    """One training run: ``status`` is running, done or failed."""

    job_id: int
    actor: str
    params: train.TrainParams
    status: str = "running"
    step: str = "starting"
    fraction: float = 0.0
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    model_key: str | None = None
    summary: str | None = None
    error: str | None = None


def describe_params(params: train.TrainParams) -> str:
    """The parameters of a run in one line, as a result names them."""
    c = params.train_cutoff_ts
    cutoff = c.isoformat() if hasattr(c, "isoformat") else repr(c)
    return (
        f"cutoff {cutoff}, half-life {params.half_life_days:g} days, eps {params.eps:g}, "
        f"{params.n_folds} folds, dsold thresholds {', '.join(f'{t:g}' for t in params.dsold_thresholds)}"
    )


class JobRunner:
    """Starts training threads and keeps their state (one per process)."""

    def __init__(self) -> None:
        self._jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def start(self, engine: Engine, params: train.TrainParams, actor: str) -> Job:
        """Validate, then train in a background thread; returns the job to poll."""
        params = train.validate_params(params)
        actor = require_actor(actor)
        t_min, t_max, _ = train.data_window(engine)
        if not t_min < params.train_cutoff_ts <= t_max:
            raise InvalidParameter(
                f"train_cutoff_ts must be {train.PARAMETER_CONSTRAINTS['train_cutoff_ts']}: after "
                f"{t_min.isoformat()} and at most {t_max.isoformat()}, got {params.train_cutoff_ts.isoformat()!r}"
            )
        with self._lock:
            job = Job(next(self._ids), actor, params)
            self._jobs[job.job_id] = job
        threading.Thread(target=self._run, args=(engine, job), name=f"woe-train-{job.job_id}", daemon=True).start()
        return job

    def _run(self, engine: Engine, job: Job) -> None:
        def progress(step: str, fraction: float) -> None:
            job.step, job.fraction = step, fraction

        try:
            result = train.train(engine, job.params, job.actor, progress=progress)
            job.model_key, job.summary, job.status = result.model_key, result.summary(), "done"
        except WoeError as exc:
            job.error, job.status = str(exc), "failed"
        except Exception as exc:  # reported to the reviewer, with the trace kept for operators
            job.error = f"unexpected error: {exc!r}"
            job.status = "failed"
            traceback.print_exc()
        finally:
            job.finished_at = datetime.now(UTC)

    def get(self, job_id: int) -> Job | None:
        return self._jobs.get(job_id)

    def wait(self, job_id: int, timeout: float) -> Job:
        """Block until the job finishes or ``timeout`` seconds pass (for CLIs and tests)."""
        deadline = datetime.now(UTC).timestamp() + timeout
        job = self._jobs[job_id]
        while job.status == "running" and datetime.now(UTC).timestamp() < deadline:
            threading.Event().wait(0.05)
        return job


RUNNER = JobRunner()
