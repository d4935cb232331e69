"""One photo assessed the same way by both engines: in-process or a process pool, or Ray Data."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pipeline.batch.manifest import WorkItem, model_label, result_row
from pipeline.errors import UserError

if TYPE_CHECKING:
    from pipeline.one_photo.assess import Assessor
    from pipeline.one_photo.settings import AssessSettings


# --------------------------------------------------------------------------- one photo (both engines)


def assess_one(assessor: Assessor, item: WorkItem) -> dict[str, Any]:
    """Assess one photo, write its result folder (atomic files, ``assessment.json`` last) and
    return its row. A photo that cannot be assessed is a ``failed`` row, never an exception."""
    from pipeline.one_photo.assessment import write_assessment
    from pipeline.one_photo.loading import PhotoError

    t = time.perf_counter()
    try:
        a = assessor.assess_file(item.path)
        if a.photo.sha256 != item.sha256:
            raise PhotoError(item.path, "the file changed while the batch ran")
        write_assessment(a, item.out_dir, overlay=assessor.settings.overlay)
    except PhotoError as exc:
        return result_row(item.row, item.path, item.sha256, "failed", error=str(exc), seconds=time.perf_counter() - t)
    except Exception as exc:  # noqa: BLE001 - one bad photo must not stop the batch; its row says why
        return result_row(
            item.row,
            item.path,
            item.sha256,
            "failed",
            error=f"{item.path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            seconds=time.perf_counter() - t,
        )
    return result_row(
        item.row,
        item.path,
        item.sha256,
        "ok",
        model=model_label(a.model),
        config_hash=a.config_hash,
        result_dir=item.out_dir,
        metrics=a.metrics.to_dict(),
        warnings=len(a.warnings),
        seconds=time.perf_counter() - t,
    )


def _limit_threads(threads: int) -> None:
    """Give each worker its share of the cores (torch, OpenCV), so N workers do not oversubscribe."""
    import cv2
    import torch

    threads = max(1, int(threads))
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def _make_assessor(settings: AssessSettings) -> Assessor:
    from pipeline.one_photo.assess import Assessor
    from pipeline.runtime import reuse_freed_memory

    reuse_freed_memory()
    return Assessor(settings)


# --------------------------------------------------------------------------- engines

Progress = Callable[[dict[str, Any]], None]

_WORKER: Assessor | None = None


def _pool_init(settings: AssessSettings, threads: int) -> None:
    global _WORKER
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    _WORKER = _make_assessor(settings)
    _limit_threads(threads)


def _pool_assess(item: WorkItem) -> dict[str, Any]:
    assert _WORKER is not None, "worker not initialised"
    return assess_one(_WORKER, item)


def worker_threads(workers: int, cpus_per_worker: int | None = None, *, cluster: bool = False) -> int:
    """Threads (and Ray CPUs) of each worker: ``cpus_per_worker``; else 1 on a Ray cluster of unknown
    node sizes (Ray places the actors), or this machine's cores shared out among the workers."""
    if cpus_per_worker:
        return int(cpus_per_worker)
    if cluster:
        return 1
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def run_local(
    items: Sequence[WorkItem],
    settings: AssessSettings,
    workers: int = 1,
    *,
    assessor: Assessor | None = None,
    progress: Progress | None = None,
    cpus_per_worker: int | None = None,
) -> list[dict[str, Any]]:
    """Assess ``items``: in this process (``workers`` 1; ``assessor`` reused if given) or in a
    pool of ``workers`` spawned processes, each loading the model once and using
    :func:`worker_threads` threads. Rows in completion order."""
    rows: list[dict[str, Any]] = []
    if not items:
        return rows
    threads = worker_threads(workers, cpus_per_worker)
    if workers <= 1:
        import cv2
        import torch

        own = assessor or _make_assessor(settings)
        before = torch.get_num_threads(), cv2.getNumThreads()
        if cpus_per_worker:
            _limit_threads(threads)
        try:
            for it in items:
                rows.append(assess_one(own, it))
                if progress:
                    progress(rows[-1])
        finally:  # this process's thread counts are the caller's again
            torch.set_num_threads(before[0])
            cv2.setNumThreads(before[1])
        return rows
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(
        max_workers=min(workers, len(items)),
        mp_context=mp.get_context("spawn"),
        initializer=_pool_init,
        initargs=(settings, threads),
    ) as pool:
        futures = [pool.submit(_pool_assess, it) for it in items]
        try:
            for fut in as_completed(futures):
                rows.append(fut.result())
                if progress:
                    progress(rows[-1])
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return rows


class RayAssessor:
    """Ray Data ``map_batches`` callable: one actor per worker, the model loaded once in ``__init__``.

    Each batch is a dict of columns (``row``, ``path``, ``sha256``, ``out_dir``); each photo's
    row comes back as one JSON text (a column of mixed None/float would not unify across blocks).
    """

    def __init__(self, settings_json: str, threads: int) -> None:
        from pipeline.one_photo.settings import AssessSettings

        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        self.assessor = _make_assessor(AssessSettings.model_validate_json(settings_json))
        _limit_threads(threads)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        out = []
        for row, path, sha, out_dir in zip(batch["row"], batch["path"], batch["sha256"], batch["out_dir"]):
            out.append(json.dumps(assess_one(self.assessor, WorkItem(int(row), str(path), str(sha), str(out_dir)))))
        return {"result": out}


def run_ray(
    items: Sequence[WorkItem],
    settings: AssessSettings,
    workers: int = 1,
    *,
    address: str | None = None,
    progress: Progress | None = None,
    cpus_per_worker: int | None = None,
) -> list[dict[str, Any]]:
    """Assess ``items`` with Ray Data: ``workers`` actors (:class:`RayAssessor`), one photo per batch.

    Connects to ``address`` (an existing cluster, e.g. ``ray://head:10001`` or ``auto``) or starts
    Ray on this machine with its cores; shuts down only a Ray it started. Each actor reserves
    ``cpus_per_worker`` CPUs and runs that many threads (default: this machine's cores shared
    out, or 1 on a cluster, where Ray places the actors). On a cluster, the package must be
    installed on every node and the photo and output paths shared by all.
    """
    if not items:
        return []
    try:
        import ray
    except ImportError:
        raise UserError("the Ray engine needs Ray: pip install -e '.[ray]'") from None
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            kwargs["address"] = address
        else:
            kwargs["num_cpus"] = os.cpu_count() or 1
        ray.init(**kwargs)
        started = True
    try:
        per_worker = worker_threads(workers, cpus_per_worker, cluster=bool(address))
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.execution_options.preserve_order = False
        ds = ray.data.from_items([it.as_dict() for it in items], override_num_blocks=len(items))
        ds = ds.map_batches(
            RayAssessor,
            fn_constructor_kwargs={"settings_json": settings.model_dump_json(), "threads": per_worker},
            compute=ray.data.ActorPoolStrategy(size=workers),
            batch_size=1,
            num_cpus=per_worker,
            batch_format="numpy",
        )
        rows = []
        for rec in ds.iter_rows():
            rows.append(json.loads(rec["result"]))
            if progress:
                progress(rows[-1])
        return rows
    finally:
        if started:
            ray.shutdown()
