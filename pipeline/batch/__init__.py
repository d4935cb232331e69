"""Batch assessment: a manifest of photos in, one result folder per photo, a Parquet table out.

Stages (issue "Scale and speed")::

    read_batch_manifest -> work list (hash each photo: its key) -> skip what is done
    -> engine (local in-process / process pool, or Ray Data map_batches) -> rows
    -> results.parquet + failures.csv -> records (visit columns) -> one MLflow run

*Done* means ``DIR/results/<sha256[:16]>_<config_hash>/assessment.json`` exists:
:func:`pipeline.one_photo.assessment.write_assessment` writes it last and atomically, so a
batch killed half-way leaves only whole results, and running it again assesses
exactly the photos not done yet (same photo bytes, same model, same configuration).

Both engines run the same :func:`~pipeline.batch.engines.assess_one` on every photo with the model loaded
once per worker, so they write the same folders and the same rows.
"""

from __future__ import annotations

from pipeline.batch.engines import RayAssessor, assess_one, run_local, run_ray, worker_threads
from pipeline.batch.manifest import (
    BATCH_COLUMNS,
    METRIC_COLUMNS,
    ROW_COLUMNS,
    VISIT_COLUMNS,
    BatchItem,
    WorkItem,
    done_row,
    photo_sha256,
    read_batch_manifest,
    result_dir,
    work_list,
)
from pipeline.batch.results import BatchResult, log_mlflow, results_frame, store_in_records, summarise, write_tables

__all__ = [
    "BATCH_COLUMNS",
    "METRIC_COLUMNS",
    "ROW_COLUMNS",
    "VISIT_COLUMNS",
    "BatchItem",
    "BatchResult",
    "RayAssessor",
    "WorkItem",
    "assess_one",
    "done_row",
    "log_mlflow",
    "photo_sha256",
    "read_batch_manifest",
    "result_dir",
    "results_frame",
    "run_local",
    "run_ray",
    "store_in_records",
    "summarise",
    "work_list",
    "worker_threads",
    "write_tables",
]
