"""Background assessment: a queue of jobs in the records, worked by one thread per process.

Why this shape: assessing a photo takes seconds and the model should be loaded once,
so uploads only queue a job (one row per photo, in the database, so that nothing is
lost on a restart) and a worker thread assesses them one at a time with the model it
loaded on its first job. Jobs left ``running`` by a process that died are queued again
on start. Several processes may share one database: a job is claimed with a
conditional update, so each is run once.

A finished job leaves the assessment in the records (``store_assessment``, idempotent)
and its output folder (``assessment.json``, ``dots.csv``, ``mask.png``,
``overlay.png``) in ``<home>/assessments/<assessment id>/``, which the reports read.
Progress is the stage reached (``STAGES``), written as the worker passes it.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ..records import PhotoStore, Records, store_photo_assessment
from ..records.schema import Job, Photo

__all__ = ["JobRunner", "PipelineAssessor", "STAGES", "WebAssessor", "assessment_folder", "enqueue_job",
           "insert_ignore"]

log = logging.getLogger("smp.web.jobs")

#: Progress (0-1) when a stage starts; the assessment's own stages come from its timer.
STAGES: dict[str, float] = {
    "queued": 0.0, "starting": 0.02, "loading model": 0.05, "load": 0.1, "calibrate": 0.2, "segment": 0.3,
    "colour": 0.55, "dots": 0.6, "pigment": 0.7, "quality": 0.8, "metrics": 0.85, "storing": 0.9,
    "writing": 0.95, "done": 1.0,
}


class WebAssessor(Protocol):
    """What the worker needs: assess one photo file (reporting stages), and write its output folder."""

    def assess(self, path: Path, progress: Callable[[str], None]) -> Any:
        """An assessment with ``to_json()`` and ``dots`` (pipeline.records.AssessmentLike)."""

    def write(self, assessment: Any, folder: Path) -> None: ...


class _StageTimer:
    """The pipeline's stage timer (pipeline.assess._Timer's interface) that also reports each stage."""

    def __init__(self, progress: Callable[[str], None]) -> None:
        self.times: dict[str, float] = {}
        self._progress = progress

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self._progress(name)
        t = time.perf_counter()
        yield
        self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t


class PipelineAssessor:
    """:class:`pipeline.assess.Assessor` (loaded once) as a :class:`WebAssessor`."""

    def __init__(self, config: Path | None = None, overrides: tuple[str, ...] = ()) -> None:
        from ..assess import Assessor, load_assess_settings

        self.assessor = Assessor(load_assess_settings(config, list(overrides)))
        for w in self.assessor.setup_warnings:
            log.warning("%s", w)

    def assess(self, path: Path, progress: Callable[[str], None]) -> Any:
        from ..loading import load_photo

        timer = _StageTimer(progress)
        with timer("load"):
            photo = load_photo(path, self.assessor.settings.load)
        return self.assessor.assess(photo, timer=timer)  # type: ignore[arg-type]

    def write(self, assessment: Any, folder: Path) -> None:
        from ..assess import write_assessment

        write_assessment(assessment, folder, overlay=self.assessor.settings.overlay)


def assessment_folder(home: Path, assessment_id: int) -> Path:
    """Where the output folder of an assessment is kept (its id is an integer: no user text in the path)."""
    return Path(home) / "assessments" / str(int(assessment_id))


def insert_ignore(session: Session, model: type, values: dict[str, Any]) -> None:
    """``INSERT ... ON CONFLICT DO NOTHING`` (SQLite, PostgreSQL): a row another request inserts first wins."""
    dialect = session.get_bind().dialect.name
    module = sqlite if dialect == "sqlite" else postgresql
    session.execute(module.insert(model).values(**values).on_conflict_do_nothing())


def enqueue_job(session: Session, *, photo_id: int, visit_id: int, user_id: int | None, now: datetime,
                rerun: bool = False) -> int:
    """The job of ``photo_id``, created (queued) if it has none; idempotent and safe under concurrency
    (one row per photo, inserted with ON CONFLICT DO NOTHING). ``rerun``: queue a finished or
    failed job again (a running or queued one is left alone). Runs in the caller's transaction."""
    insert_ignore(session, Job, {"photo_id": photo_id, "visit_id": visit_id, "status": "queued", "progress": 0.0,
                                  "stage": "queued", "attempts": 0, "created_by": user_id, "created_at": now,
                                  "updated_at": now})
    job = session.scalars(sa.select(Job).where(Job.photo_id == photo_id)).one()
    if rerun and job.status in ("done", "failed"):
        job.status, job.progress, job.stage, job.error, job.updated_at = "queued", 0.0, "queued", None, now
    return job.id


class JobRunner:
    """Runs queued jobs in a background thread (:meth:`start`) or on demand (:meth:`drain`)."""

    def __init__(self, records: Records, store: PhotoStore, home: Path,
                 make_assessor: Callable[[], WebAssessor], clock: Callable[[], float] = time.time,
                 poll_s: float = 2.0) -> None:
        self.records = records
        self.store = store
        self.home = Path(home)
        self._make_assessor = make_assessor
        self._assessor: WebAssessor | None = None
        self._clock = clock
        self._poll_s = poll_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one job at a time per process (the assessor is not thread-safe)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), timezone.utc)

    # ------------------------------------------------------------------ lifecycle

    def recover(self) -> int:
        """Queue again the jobs left running by a process that stopped; returns how many."""
        with self.records.transaction() as s:
            result = s.execute(sa.update(Job).where(Job.status == "running")
                               .values(status="queued", stage="queued", progress=0.0, updated_at=self.now()))
            return int(result.rowcount or 0)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="smp-assess-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wake(self) -> None:
        """Tell the worker that jobs were queued."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.run_once()
            except Exception:  # a broken database must not kill the worker: log, wait, retry
                log.exception("assessment worker")
                worked = False
            if not worked:
                self._wake.wait(self._poll_s)
                self._wake.clear()

    def drain(self, max_jobs: int | None = None) -> int:
        """Run queued jobs in this thread until none is left (or ``max_jobs``); returns how many ran."""
        n = 0
        while (max_jobs is None or n < max_jobs) and self.run_once():
            n += 1
        return n

    # ------------------------------------------------------------------ one job

    def _claim(self) -> int | None:
        with self.records.transaction() as s:
            for job_id in s.scalars(sa.select(Job.id).where(Job.status == "queued").order_by(Job.id).limit(5)):
                claimed = s.execute(sa.update(Job).where(Job.id == job_id, Job.status == "queued").values(
                    status="running", stage="starting", progress=STAGES["starting"], attempts=Job.attempts + 1,
                    updated_at=self.now()))
                if claimed.rowcount == 1:
                    return job_id
        return None

    def _set(self, job_id: int, **values: Any) -> None:
        with self.records.transaction() as s:
            s.execute(sa.update(Job).where(Job.id == job_id).values(updated_at=self.now(), **values))

    def _stage(self, job_id: int, stage: str) -> None:
        self._set(job_id, stage=stage, progress=STAGES.get(stage, 0.5))

    def run_once(self) -> bool:
        """Claim and run one queued job; False when there was none."""
        with self._lock:
            job_id = self._claim()
            if job_id is None:
                return False
            try:
                assessment_id = self._run(job_id)
            except Exception as exc:
                from ..errors import UserError
                from ..loading import PhotoError

                # a photo's problem is told by its reason (the message would name the server's path)
                text = exc.reason if isinstance(exc, PhotoError) else str(exc)
                reason = " ".join(text.split())[:500] or type(exc).__name__
                if not isinstance(exc, (UserError, ValueError)):
                    log.exception("job %s failed", job_id)
                self._set(job_id, status="failed", stage="failed", error=reason)
            else:
                self._set(job_id, status="done", stage="done", progress=1.0, error=None, assessment_id=assessment_id)
            return True

    def _run(self, job_id: int) -> int:
        with self.records.session(read_only=True) as s:
            photo_id, rel = s.execute(sa.select(Photo.id, Photo.stored_path).join(Job, Job.photo_id == Photo.id)
                                 .where(Job.id == job_id)).one()
        if self._assessor is None:
            self._stage(job_id, "loading model")
            self._assessor = self._make_assessor()
        path = self.store.path(rel)
        result = self._assessor.assess(path, lambda stage: self._stage(job_id, stage))
        self._stage(job_id, "storing")
        with self.records.transaction() as s:
            stored = store_photo_assessment(s, photo_id, result.to_json(), result.dots)
        self._stage(job_id, "writing")
        folder = assessment_folder(self.home, stored.id)
        self._assessor.write(result, folder)
        return stored.id
