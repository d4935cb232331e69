"""MLflow runs keep their artifacts beside their SQLite store, never in the folder a command runs in."""

from pathlib import Path

import mlflow

from models.registry import artifact_root, use_experiment


def test_artifacts_go_beside_the_sqlite_store_not_into_the_working_folder(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # MLflow's own default would be ./mlruns here
    store = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    first = use_experiment("smp-test", store)
    with mlflow.start_run() as run:
        mlflow.log_text("hello", "note.txt")
    assert use_experiment("smp-test", store) == first  # found again, not created twice
    local = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="note.txt"))
    assert local.read_text() == "hello"
    beside = tmp_path / "store" / "mlartifacts" / "smp-test"
    assert list(beside.rglob("note.txt")) and not (work / "mlruns").exists()


def test_only_a_sqlite_file_gets_an_artifact_folder_of_its_own():
    assert artifact_root("sqlite:////data/mlflow.db") == Path("/data/mlartifacts").as_uri()
    assert artifact_root("sqlite:///:memory:") is None
    assert artifact_root("http://mlflow.clinic.example:5000") is None
    assert artifact_root("postgresql://u@h/db") is None
