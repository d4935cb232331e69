"""End-to-end training: tiny config, MLflow run and registry, checkpoints, resume, evaluate CLI."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from data.config import ConfigError, config_dir, load_settings
from models.checkpoint import CheckpointError, load_model, save_model
from models.network import ModelSettings, build_model
from pipeline.cli import main as smp


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    assert smp(["synth", "--out", str(out), "--n", "6", "--seed", "5", "--set", "image.width=320",
                "--set", "image.height=240"]) == 0
    return out / "manifest.csv"


def _tiny_settings(data: Path, out: Path, *extra: str):
    from models.train import TrainSettings

    return load_settings(TrainSettings, config_dir() / "train" / "tiny.yaml",
                         [f"train_manifest={data}", f"out_dir={out}", *extra])


def test_tiny_training_logs_registers_and_resumes(tiny_data, tmp_path, monkeypatch):
    import time

    import mlflow
    from mlflow import MlflowClient

    from models.train import train

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    t0 = time.perf_counter()
    res = train(_tiny_settings(tiny_data, tmp_path / "run"), progress=False)
    assert time.perf_counter() - t0 < 180
    assert res.best_model.exists() and (tmp_path / "run" / "last.pt").exists()
    assert len(res.history) == 2 and res.registered_version == "1" and res.champion
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    run = client.get_run(res.run_id)
    assert "model.arch" in run.data.params and "optim.lr" in run.data.params
    assert client.get_metric_history(res.run_id, "train_loss")[-1].step == 2
    assert len(run.inputs.dataset_inputs) == 2
    arts = {a.path for a in client.list_artifacts(res.run_id, "validation")}
    assert "validation/confusion.png" in arts and "validation/evaluation.csv" in arts
    assert str(client.get_model_version_by_alias("smp-segmenter", "champion").version) == "1"

    # resume: two more epochs continue from epoch 2 (history keeps growing)
    res2 = train(_tiny_settings(tiny_data, tmp_path / "run", "optim.epochs=3"), resume=True, progress=False)
    assert [h["epoch"] for h in res2.history] == [1, 2, 3]
    # a worse (untrained) model must not take the champion alias
    if not res2.champion:
        assert str(client.get_model_version_by_alias("smp-segmenter", "champion").version) == "1"

    # evaluate from the registry
    out = tmp_path / "ev"
    assert smp(["evaluate", "--model", "models:/smp-segmenter@champion", "--data", str(tiny_data),
                "--out", str(out), "--no-mlflow"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_images"] == 6 and 0 <= summary["miou_scalp_hair"] <= 1


def test_one_step_lowers_the_loss_on_a_fixed_batch():
    from models.losses import LossSettings, total_loss

    torch.manual_seed(0)
    model = build_model(ModelSettings(width_mult=0.5, decoder_channels=(8, 16, 16, 24), head_channels=8,
                                      refine_channels=4))
    x = torch.rand(2, 3, 64, 64)
    batch = {"mask": torch.randint(0, 3, (2, 64, 64)), "points": torch.rand(2, 6, 2) * 63,
             "n_points": torch.tensor([6, 6])}
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(5):
        loss, _ = total_loss(model(x), batch, LossSettings())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0]


def test_checkpoint_round_trip_and_bad_files(tmp_path):
    model = build_model(ModelSettings(width_mult=0.5, decoder_channels=(8, 16, 16, 24)))
    p = save_model(tmp_path / "m.pt", model, meta={"note": "test"})
    loaded = load_model(p)
    assert loaded.meta["note"] == "test" and len(loaded.sha256) == 64
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k])
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_model(bad)
    with pytest.raises(CheckpointError, match="no such"):
        load_model(tmp_path / "missing.pt")
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an smp-assess checkpoint"):
        load_model(tmp_path / "other.pt")


def test_train_config_errors_are_one_line(tmp_path, capsys):
    assert smp(["train", "--set", "optim.lr=-1", "--set", f"train_manifest={tmp_path}/m.csv"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "optim.lr" in err[0]
    assert smp(["train", "--set", "optim.nope=1"]) == 2
    assert "optim.nope" in capsys.readouterr().err


def test_resume_without_a_run_is_a_clear_error(tiny_data, tmp_path):
    from models.train import train

    with pytest.raises(ConfigError, match="nothing to resume"):
        train(_tiny_settings(tiny_data, tmp_path / "none"), resume=True, progress=False)


def test_evaluate_missing_model_is_one_line(tiny_data, tmp_path, capsys):
    assert smp(["evaluate", "--model", str(tmp_path / "nope.pt"), "--data", str(tiny_data),
                "--out", str(tmp_path / "e"), "--no-mlflow"]) == 2
    assert "nope.pt" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tiny_data, tmp_path):
    """The same `smp train` entry point under torchrun: DDP with gloo on two CPU processes."""
    import subprocess
    import sys

    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    cmd = [str(torchrun), "--nproc_per_node", "2", "-m", "pipeline.cli", "train",
           "--config", str(config_dir() / "train" / "tiny.yaml"), "--set", f"train_manifest={tiny_data}",
           "--set", f"out_dir={tmp_path / 'ddp'}", "--set", "threads=1", "--quiet"]
    res = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("best model:") == 1  # only rank 0 reports, logs and saves
    loaded = load_model(tmp_path / "ddp" / "best.pt")
    assert loaded.meta["epoch"] >= 1


def test_evaluate_reports_a_corrupt_photo_and_scores_the_rest(tiny_data, tmp_path, capsys):
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(tiny_data.parent, ds)
    photo = ds / "img_00001" / "photo.jpg"
    photo.write_bytes(photo.read_bytes()[:500])  # truncated JPEG
    model = save_model(tmp_path / "m.pt", build_model(ModelSettings(width_mult=0.5, decoder_channels=(8, 16, 16, 24))))
    assert smp(["evaluate", "--model", str(model), "--data", str(ds / "manifest.csv"), "--out", str(tmp_path / "e"),
                "--no-mlflow", "--overlays", "0"]) == 1
    out = capsys.readouterr().out
    assert "failed:" in out and "img_00001" in out
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert summary["n_images"] == 5 and summary["n_failed"] == 1


def test_evaluate_bad_threshold_is_one_line(tiny_data, capsys):
    assert smp(["evaluate", "--data", str(tiny_data), "--threshold", "2", "--no-mlflow"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--threshold" in err[0]
