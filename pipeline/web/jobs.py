"""Background assessment: a queue of jobs in the records, worked by one thread per process.

Why this shape: assessing a photo takes seconds and the model should be loaded once,
so uploads only queue a job (one row per photo, in the database, so that nothing is
lost on a restart) and a worker thread assesses them one at a time with the model it
loaded on its first job. Jobs left ``running`` by a process that died are queued again
on start. Several processes may share one database: a job is claimed with a
conditional update, so each is run once.

The worker is shared by every clinic, so:

* clinics take turns (:func:`next_clinic`): the next job is the oldest waiting job of
  the clinic served least recently (a clinic never served by this worker first; ties
  go to the clinic whose oldest job has waited longest). A clinic that queues a
  hundred photos delays another clinic's photo by one job, not by a hundred;
* each job runs in a child process with a time limit and a memory limit
  (:mod:`pipeline.web.isolation`); a job past either fails with that reason in its
  record, and the worker goes on with the next.

A finished job leaves the assessment in the records (``store_photo_assessment``,
idempotent) and its output folder (``assessment.json``, ``dots.csv``, ``mask.png``,
``overlay.png``) in ``<home>/assessments/<assessment id>/``, which the reports read:
the child writes it into a scratch folder, which the worker moves into place once the
assessment is stored. Progress is the stage reached (``STAGES``), written as the
worker passes it.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from pipeline.records import PhotoStore, Records, store_photo_assessment
from pipeline.records.schema import Client, Job, Photo, Visit
from pipeline.web.isolation import JobInterrupted, JobLimits, JobOverLimit, run_isolated

__all__ = [
    "JobLimits",
    "JobRunner",
    "PipelineAssessor",
    "STAGES",
    "WebAssessor",
    "assessment_folder",
    "enqueue_job",
    "insert_ignore",
    "next_clinic",
]

log = logging.getLogger("smp.web.jobs")

#: Progress (0-1) when a stage starts; the assessment's own stages come from its timer.
STAGES: dict[str, float] = {
    "queued": 0.0,
    "starting": 0.02,
    "loading model": 0.05,
    "load": 0.1,
    "calibrate": 0.2,
    "segment": 0.3,
    "colour": 0.55,
    "dots": 0.6,
    "pigment": 0.7,
    "quality": 0.8,
    "metrics": 0.85,
    "writing": 0.9,
    "storing": 0.95,
    "done": 1.0,
}


class WebAssessor(Protocol):
    """What the worker needs: assess one photo file (reporting stages), and write its output folder."""

    def assess(self, path: Path, progress: Callable[[str], None]) -> Any:
        """An assessment with ``to_json()`` and ``dots`` (pipeline.records.AssessmentLike)."""

    def write(self, assessment: Any, folder: Path, name: str) -> None:
        """Write the output folder; ``name``: the photo's file name as it was uploaded (its overlay's title)."""


class _StageTimer:
    """The pipeline's stage timer (pipeline.one_photo.assess._Timer's interface) that also reports each stage."""

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
    """:class:`pipeline.one_photo.assess.Assessor` (loaded once) as a :class:`WebAssessor`."""

    def __init__(self, config: Path | None = None, overrides: tuple[str, ...] = ()) -> None:
        from pipeline.one_photo.assess import Assessor
        from pipeline.one_photo.settings import load_assess_settings

        self.assessor = Assessor(load_assess_settings(config, list(overrides)))
        for w in self.assessor.setup_warnings:
            log.warning("%s", w)

    def assess(self, path: Path, progress: Callable[[str], None]) -> Any:
        from pipeline.one_photo.loading import load_photo

        timer = _StageTimer(progress)
        with timer("load"):
            photo = load_photo(path, self.assessor.settings.load)
        return self.assessor.assess(photo, timer=timer)  # type: ignore[arg-type]

    def write(self, assessment: Any, folder: Path, name: str) -> None:
        from pipeline.one_photo.assessment import write_assessment
        from pipeline.subject import Subject

        write_assessment(assessment, folder, overlay=self.assessor.settings.overlay, subject=Subject(photo=name))


def assessment_folder(home: Path, assessment_id: int) -> Path:
    """Where the output folder of an assessment is kept (its id is an integer: no user text in the path)."""
    return Path(home) / "assessments" / str(int(assessment_id))


def insert_ignore(session: Session, model: type, values: dict[str, Any]) -> None:
    """``INSERT ... ON CONFLICT DO NOTHING`` (SQLite, PostgreSQL): a row another request inserts first wins."""
    dialect = session.get_bind().dialect.name
    module = sqlite if dialect == "sqlite" else postgresql
    session.execute(module.insert(model).values(**values).on_conflict_do_nothing())


def enqueue_job(
    session: Session, *, photo_id: int, visit_id: int, user_id: int | None, now: datetime, rerun: bool = False
) -> int:
    """The job of ``photo_id``, created (queued) if it has none; idempotent and safe under concurrency
    (one row per photo, inserted with ON CONFLICT DO NOTHING). ``rerun``: queue a finished or
    failed job again (a running or queued one is left alone). Runs in the caller's transaction."""
    insert_ignore(
        session,
        Job,
        {
            "photo_id": photo_id,
            "visit_id": visit_id,
            "status": "queued",
            "progress": 0.0,
            "stage": "queued",
            "attempts": 0,
            "created_by": user_id,
            "created_at": now,
            "updated_at": now,
        },
    )
    job = session.scalars(sa.select(Job).where(Job.photo_id == photo_id)).one()
    if rerun and job.status in ("done", "failed"):
        job.status, job.progress, job.stage, job.error, job.updated_at = "queued", 0.0, "queued", None, now
    return job.id


def next_clinic(oldest_waiting: Mapping[int, int], last_served: Mapping[int, int]) -> int | None:
    """The clinic whose job runs next: of the clinics with a waiting job (``oldest_waiting``: clinic
    -> its oldest waiting job's id), the one served least recently (``last_served``: clinic -> when,
    as a rising turn number; never served comes first), ties to the oldest waiting job."""
    if not oldest_waiting:
        return None
    return min(oldest_waiting, key=lambda clinic: (last_served.get(clinic, -1), oldest_waiting[clinic]))


def _replace_folder(source: Path, target: Path) -> None:
    """Move the folder ``source`` to ``target``, replacing what was there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    source.rename(target)


class JobRunner:
    """Runs queued jobs in a background thread (:meth:`start`) or on demand (:meth:`drain`).

    ``limits`` (:class:`JobLimits`) bound each job; the app sets them from its settings.
    The clinics' turns are remembered by this runner (a restart starts them afresh).
    """

    def __init__(
        self,
        records: Records,
        store: PhotoStore,
        home: Path,
        make_assessor: Callable[[], WebAssessor],
        clock: Callable[[], float] = time.time,
        poll_s: float = 2.0,
        limits: JobLimits = JobLimits(),
    ) -> None:
        self.records = records
        self.store = store
        self.home = Path(home)
        self.limits = limits
        self._turns = itertools.count()
        self._served: dict[int, int] = {}
        self._make_assessor = make_assessor
        self._assessor: WebAssessor | None = None
        self._clock = clock
        self._poll_s = poll_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one job at a time per process (the assessor is not thread-safe)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    # ------------------------------------------------------------------ lifecycle

    def recover(self) -> int:
        """Queue again the jobs left running by a process that stopped; returns how many."""
        with self.records.transaction() as s:
            result = cast(
                "CursorResult[Any]",
                s.execute(  # an UPDATE's result is a CursorResult
                    sa.update(Job)
                    .where(Job.status == "running")
                    .values(status="queued", stage="queued", progress=0.0, updated_at=self.now())
                ),
            )
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
        """Take the next job in the clinics' turn (:func:`next_clinic`); None when none waits."""
        waiting_by_clinic = (
            sa.select(Client.clinic_id, sa.func.min(Job.id))
            .join(Visit, Visit.id == Job.visit_id)
            .join(Client, Client.id == Visit.client_id)
            .where(Job.status == "queued")
            .group_by(Client.clinic_id)
        )
        for _ in range(5):  # another process may claim the chosen job first
            with self.records.transaction() as s:
                oldest = {int(clinic): int(job) for clinic, job in s.execute(waiting_by_clinic)}
                clinic = next_clinic(oldest, self._served)
                if clinic is None:
                    return None
                claimed = cast(
                    "CursorResult[Any]",
                    s.execute(  # an UPDATE's result is a CursorResult
                        sa.update(Job)
                        .where(Job.id == oldest[clinic], Job.status == "queued")
                        .values(
                            status="running",
                            stage="starting",
                            progress=STAGES["starting"],
                            attempts=Job.attempts + 1,
                            updated_at=self.now(),
                        )
                    ),
                )
                if claimed.rowcount == 1:
                    self._served[clinic] = next(self._turns)
                    return oldest[clinic]
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
            except JobInterrupted:  # the server is stopping: the job waits for the next start
                self._set(job_id, status="queued", stage="queued", progress=0.0)
                return True
            except Exception as exc:
                from pipeline.errors import UserError
                from pipeline.one_photo.loading import PhotoError

                # a photo's problem is told by its reason (the message would name the server's path)
                text = exc.reason if isinstance(exc, PhotoError) else str(exc)
                reason = " ".join(text.split())[:500] or type(exc).__name__
                if isinstance(exc, JobOverLimit):
                    log.warning("job %s %s", job_id, reason)
                elif not isinstance(exc, (UserError, ValueError)):
                    log.exception("job %s failed", job_id)
                self._set(job_id, status="failed", stage="failed", error=reason)
            else:
                self._set(job_id, status="done", stage="done", progress=1.0, error=None, assessment_id=assessment_id)
            return True

    def _run(self, job_id: int) -> int:
        with self.records.session(read_only=True) as s:
            photo_id, rel, name = s.execute(
                sa.select(Photo.id, Photo.stored_path, Photo.original_name)
                .join(Job, Job.photo_id == Photo.id)
                .where(Job.id == job_id)
            ).one()
        if self._assessor is None:
            self._stage(job_id, "loading model")
            self._assessor = self._make_assessor()
        assessor, path = self._assessor, self.store.path(rel)
        scratch = self.home / "tmp" / f"job-{int(job_id)}-{secrets.token_hex(4)}"

        def work(progress: Callable[[str], None]) -> tuple[Any, Any]:  # in the job's own process
            result = assessor.assess(path, progress)
            progress("writing")
            assessor.write(result, scratch, name)
            return result.to_json(), result.dots

        try:
            doc, dots = run_isolated(
                work, self.limits, progress=lambda stage: self._stage(job_id, stage), stopping=self._stop.is_set
            )
            self._stage(job_id, "storing")
            with self.records.transaction() as s:
                stored = store_photo_assessment(s, photo_id, doc, dots)
            _replace_folder(scratch, assessment_folder(self.home, stored.id))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return stored.id
