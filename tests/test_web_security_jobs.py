"""Web security: what one job may cost: clinics take turns in the queue; a job past its time or memory limit fails."""

from __future__ import annotations

from pathlib import Path

from web_support import dispose, make_world, noise_png, upload

from pipeline.records.schema import Job

# --------------------------------------------------------------------------- what one job may cost


class _Quick:
    """An assessor that judges nothing, at once: except the photos in ``slow`` (it sleeps) and in
    ``hungry`` (it asks for 16 GiB)."""

    def __init__(self, slow: set[str] = frozenset(), hungry: set[str] = frozenset()) -> None:
        self.slow, self.hungry = slow, hungry

    def assess(self, path, progress):
        import time

        import numpy as np

        sha = Path(path).name[:64]
        progress("segment")
        if sha in self.slow:
            time.sleep(60)
        if sha in self.hungry:
            np.ones(16 * 2**30, np.uint8)
        return _QuickResult(sha)

    def write(self, result, folder, name):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "assessment.json").write_text("{}")


class _QuickResult:
    dots = None

    def __init__(self, sha: str) -> None:
        self.sha = sha

    def to_json(self) -> dict:
        return {
            "schema": "test",
            "config_hash": "quick",
            "model": {"name": "quick", "version": "1"},
            "photo": {"sha256": self.sha},
            "metrics": {"dot_count": 0},
        }


def _job_states(w, job_ids: list[int]) -> list[str]:
    with w.ctx.records.session() as s:
        return [s.get(Job, j).status for j in job_ids]


def test_clinics_take_turns_in_the_queue(tmp_path):
    """Clinic A queues three photos, then clinic B two: they run A1, B1, A2, B2, A3."""
    w = make_world(tmp_path, assessor_factory=_Quick)
    try:
        jobs = {}
        for name, user, seed in (
            ("A1", "a-staff", 1),
            ("A2", "a-staff", 2),
            ("A3", "a-staff", 3),
            ("B1", "b-staff", 4),
            ("B2", "b-staff", 5),
        ):
            r = upload(w.api(user), noise_png(seed), client_id=f"Q-{name}", kind="baseline", session=None)
            jobs[name] = r.json()["job"]["id"]
        order = []
        while w.ctx.jobs.drain(max_jobs=1):
            states = dict(zip(jobs, _job_states(w, list(jobs.values()))))
            order.append(next(n for n, st in states.items() if st == "done" and n not in order))
        assert order == ["A1", "B1", "A2", "B2", "A3"]
    finally:
        dispose()


def test_a_job_past_its_time_or_memory_limit_fails_with_the_reason_and_the_next_runs(tmp_path):
    slow_photo, hungry_photo, fine_photo = noise_png(11), noise_png(12), noise_png(13)
    sha = lambda data: __import__("hashlib").sha256(data).hexdigest()  # noqa: E731
    w = make_world(
        tmp_path,
        job_time_limit_s=1.5,
        job_memory_limit_mb=512,
        assessor_factory=lambda: _Quick(slow={sha(slow_photo)}, hungry={sha(hungry_photo)}),
    )
    try:
        ids = [
            upload(w.api("a-staff"), data, client_id="LIMITS", kind="baseline", session=None).json()["job"]["id"]
            for data in (slow_photo, hungry_photo, fine_photo)
        ]
        assert w.drain() == 3
        api = w.api("a-staff")
        slow, hungry, fine = (api.get(f"/api/v1/jobs/{i}").json() for i in ids)
        assert (
            slow["status"] == "failed"
            and slow["error"] == "stopped: the assessment took longer than the time limit of 1.5 s"
        )
        assert (
            hungry["status"] == "failed"
            and hungry["error"] == "stopped: the assessment needed more memory than the limit of 512 MB"
        )
        assert fine["status"] == "done" and fine["assessment_id"]
        assert (w.home / "assessments" / str(fine["assessment_id"]) / "assessment.json").is_file()
        assert not list((w.home / "tmp").glob("job-*")), "no scratch folder is left behind"
    finally:
        dispose()
