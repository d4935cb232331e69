"""End-to-end training: tiny config, MLflow run and registry, checkpoints, resume, evaluate CLI."""

from __future__ import annotations

import json
import math
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
    assert (
        smp(
            [
                "synth",
                "--out",
                str(out),
                "--n",
                "6",
                "--seed",
                "5",
                "--set",
                "image.width=320",
                "--set",
                "image.height=240",
            ]
        )
        == 0
    )
    return out / "manifest.csv"


#: a small gate suite (the default is 12 photos of 640 x 480)
GATE = ("tracking.gate.n_photos=2", "tracking.gate.width=256", "tracking.gate.height=192")


def _tiny_settings(data: Path, out: Path, *extra: str):
    from models.train import TrainSettings

    return load_settings(
        TrainSettings, config_dir() / "train" / "tiny.yaml", [f"train_manifest={data}", f"out_dir={out}", *extra]
    )


@pytest.mark.slow  # real training: run in CI's slow pass
def test_tiny_training_logs_registers_and_resumes(tiny_data, tmp_path, monkeypatch):
    import time

    import mlflow
    from mlflow import MlflowClient

    from models.train import train

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    t0 = time.perf_counter()
    res = train(_tiny_settings(tiny_data, tmp_path / "run", *GATE), progress=False)
    assert time.perf_counter() - t0 < 180
    assert res.best_model.exists() and (tmp_path / "run" / "last.pt").exists()
    # the store's first champion is the bundled model (version 1); a tiny run does not beat it
    assert len(res.history) == 2 and res.registered_version == "2" and not res.champion
    assert "version 1 stays champion" in res.champion_decision, res.champion_decision
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    run = client.get_run(res.run_id)
    assert "model.arch" in run.data.params and "optim.lr" in run.data.params
    assert client.get_metric_history(res.run_id, "train_loss")[-1].step == 2
    assert len(run.inputs.dataset_inputs) == 2
    arts = {a.path for a in client.list_artifacts(res.run_id, "validation")}
    assert "validation/confusion.png" in arts and "validation/evaluation.csv" in arts
    champion = client.get_model_version_by_alias("smp-segmenter", "champion")
    assert str(champion.version) == "1" and champion.tags["source"] == "bundled"
    mine = client.get_model_version("smp-segmenter", "2")
    assert mine.tags["gate_promoted"] == "False" and mine.tags["gate_suite"] == champion.tags["gate_suite"]
    assert float(mine.tags["gate_score"]) <= float(champion.tags["gate_score"]) + 0.01
    assert run.data.tags["champion_decision"] == res.champion_decision

    # resume: two more epochs continue from epoch 2 (history keeps growing)
    res2 = train(_tiny_settings(tiny_data, tmp_path / "run", "optim.epochs=3", *GATE), resume=True, progress=False)
    assert [h["epoch"] for h in res2.history] == [1, 2, 3]
    # a worse (untrained) model must not take the champion alias
    if not res2.champion:
        assert str(client.get_model_version_by_alias("smp-segmenter", "champion").version) == "1"

    # evaluate from the registry
    out = tmp_path / "ev"
    assert (
        smp(
            [
                "evaluate",
                "--model",
                "models:/smp-segmenter@champion",
                "--data",
                str(tiny_data),
                "--out",
                str(out),
                "--no-mlflow",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_images"] == 6 and 0 <= summary["miou_scalp_hair"] <= 1


def test_one_step_lowers_the_loss_on_a_fixed_batch():
    from models.losses import LossSettings, total_loss

    torch.manual_seed(0)
    model = build_model(
        ModelSettings(width_mult=0.5, decoder_channels=(8, 16, 16, 24), head_channels=8, refine_channels=4)
    )
    x = torch.rand(2, 3, 64, 64)
    batch = {
        "mask": torch.randint(0, 3, (2, 64, 64)),
        "points": torch.rand(2, 6, 2) * 63,
        "n_points": torch.tensor([6, 6]),
    }
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
    assert (
        smp(
            [
                "evaluate",
                "--model",
                str(tmp_path / "nope.pt"),
                "--data",
                str(tiny_data),
                "--out",
                str(tmp_path / "e"),
                "--no-mlflow",
            ]
        )
        == 2
    )
    assert "nope.pt" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tiny_data, tmp_path):
    """The same `smp train` entry point under torchrun: DDP with gloo on two CPU processes."""
    import subprocess
    import sys

    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    cmd = [
        str(torchrun),
        "--nproc_per_node",
        "2",
        "-m",
        "pipeline.cli",
        "train",
        "--config",
        str(config_dir() / "train" / "tiny.yaml"),
        "--set",
        f"train_manifest={tiny_data}",
        "--set",
        f"out_dir={tmp_path / 'ddp'}",
        "--set",
        "threads=1",
        "--quiet",
    ]
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
    assert (
        smp(
            [
                "evaluate",
                "--model",
                str(model),
                "--data",
                str(ds / "manifest.csv"),
                "--out",
                str(tmp_path / "e"),
                "--no-mlflow",
                "--overlays",
                "0",
            ]
        )
        == 1
    )
    out = capsys.readouterr().out
    assert "failed:" in out and "img_00001" in out
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert summary["n_images"] == 5 and summary["n_failed"] == 1


def test_evaluate_bad_threshold_is_one_line(tiny_data, capsys):
    assert smp(["evaluate", "--data", str(tiny_data), "--threshold", "2", "--no-mlflow"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--threshold" in err[0]


# --- init_weights -------------------------------------------------------------------------------

_SMALL = {"width_mult": 0.5, "decoder_channels": (8, 16, 16, 24), "head_channels": 8, "refine_channels": 4}


def _small(seed: int, **changes):
    torch.manual_seed(seed)
    return build_model(ModelSettings(**{**_SMALL, **changes}))


def test_init_weights_loads_the_checkpoint_and_reinitialises_named_heads(tmp_path):
    from models.checkpoint import init_from_checkpoint

    source = _small(0)
    path = save_model(tmp_path / "src.pt", source, meta={"name": "source"})
    fresh = _small(1)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    info = init_from_checkpoint(fresh, path, ["dot_head"])
    got, src = fresh.state_dict(), source.state_dict()
    heads = [k for k in got if k.startswith("dot_head.")]
    assert heads and info.reinitialised == len(heads) and info.loaded == len(got) - len(heads)
    for k in got:
        if k.startswith("dot_head."):
            assert torch.equal(got[k], before[k])  # the network's own (seeded) initialisation
        else:
            assert torch.equal(got[k], src[k]), k
    assert not torch.equal(got["dot_head.body.0.weight"], src["dot_head.body.0.weight"])
    meta = info.as_meta()
    assert meta["reinit_heads"] == ["dot_head"] and meta["source_name"] == "source" and len(meta["sha256"]) == 64
    # no heads: everything loaded
    whole = _small(2)
    init_from_checkpoint(whole, path)
    assert all(torch.equal(v, src[k]) for k, v in whole.state_dict().items())


def test_init_weights_shape_mismatch_is_an_error_unless_the_head_is_reinitialised(tmp_path):
    from models.checkpoint import CheckpointError, init_from_checkpoint

    path = save_model(tmp_path / "src.pt", _small(0))
    wider_head = _small(1, head_channels=16)
    with pytest.raises(CheckpointError, match=r"dot_head\.body\.0\.weight has shape") as err:
        init_from_checkpoint(wider_head, path)
    assert "\n" not in str(err.value)
    init_from_checkpoint(wider_head, path, ["dot_head"])  # the head is fresh: its shapes may differ
    with pytest.raises(CheckpointError, match=r"decoder\.") as err:
        init_from_checkpoint(_small(1, decoder_channels=(8, 16, 16, 32)), path, ["dot_head"])
    with pytest.raises(CheckpointError, match="'dot_haed' names no parameter"):
        init_from_checkpoint(_small(1), path, ["dot_haed"])
    with pytest.raises(CheckpointError, match="no such model file"):
        init_from_checkpoint(_small(1), tmp_path / "gone.pt")


def test_init_weights_settings_are_validated_once(tiny_data, tmp_path, capsys):
    path = save_model(tmp_path / "src.pt", _small(0))
    s = _tiny_settings(tiny_data, tmp_path / "r", f"init_weights={path}", "reinit_heads=[dot_head]")
    assert s.init_weights == str(path) and s.reinit_heads == ("dot_head",)
    assert _tiny_settings(tiny_data, tmp_path / "r", "init_weights=models:/smp-segmenter@champion").init_weights
    assert _tiny_settings(tiny_data, tmp_path / "r", "init_weights=bundled").init_weights == "bundled"
    with pytest.raises(ConfigError, match="init_weights: no such checkpoint file") as err:
        _tiny_settings(tiny_data, tmp_path / "r", f"init_weights={tmp_path / 'nope.pt'}")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="reinit_heads: needs init_weights"):
        _tiny_settings(tiny_data, tmp_path / "r", "reinit_heads=[dot_head]")
    with pytest.raises(ConfigError, match="reinit_heads"):
        _tiny_settings(tiny_data, tmp_path / "r", f"init_weights={path}", "reinit_heads=['dot head']")
    # the CLI: one line naming the key and the file
    assert (
        smp(
            [
                "train",
                "--config",
                str(config_dir() / "train" / "tiny.yaml"),
                "--set",
                f"train_manifest={tiny_data}",
                "--set",
                f"init_weights={tmp_path / 'nope.pt'}",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "init_weights" in err[0] and "nope.pt" in err[0]


def test_training_from_init_weights_records_them(tiny_data, tmp_path, monkeypatch):
    """One short epoch from a checkpoint: the run's params and the new checkpoint's meta name it."""
    import mlflow
    from mlflow import MlflowClient

    from models.train import train

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    source = _small(0)
    path = save_model(tmp_path / "src.pt", source)
    s = _tiny_settings(
        tiny_data,
        tmp_path / "run",
        f"init_weights={path}",
        "reinit_heads=[dot_head]",
        "optim.epochs=1",
        "optim.steps_per_epoch=1",
        "optim.lr=1e-9",
        "eval.max_images=1",
        "tracking.register_version=false",
        "tracking.overlays=0",
        "num_workers=0",
    )
    res = train(s, progress=False)
    loaded = load_model(res.best_model)
    init = loaded.meta["init"]
    assert init["weights"] == str(path) and init["reinit_heads"] == ["dot_head"] and init["sha256"]
    got = loaded.model.state_dict()
    # a 1e-9 learning rate barely moves the weights: the encoder is the checkpoint's
    w = "encoder.body.0.0.weight"
    assert torch.allclose(got[w], source.state_dict()[w], atol=1e-6)
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    params = MlflowClient().get_run(res.run_id).data.params
    assert params["init_weights"] == str(path) and params["init_weights_sha256"] == init["sha256"]
    assert "dot_head" in params["reinit_heads"]


# --- visible dots only --------------------------------------------------------------------------


def test_targets_use_visible_dots_and_ignore_the_neighbourhood_of_invisible_ones():
    from models.losses import LossSettings, heat_focal_loss, total_loss
    from models.targets import dot_ignore, dot_targets

    # a hand-built sample: 32x32 input, stride 2; a visible dot at (9, 9), an invisible one at (23, 23),
    # a visible one at (21, 25) that lies inside the invisible dot's window
    points = torch.tensor([[[9.0, 9.0], [23.0, 23.0], [21.0, 25.0], [math.nan, math.nan]]])
    visible = torch.tensor([[True, False, True, False]])
    heat, offset, mask = dot_targets(points, (32, 32), 2, 2.0, visible)
    ignore = dot_ignore(points, visible, (32, 32), 2, 2.0)
    assert heat[0, 0, 4, 4] == 1 and heat[0, 0, 12, 10] == 1 and int((heat == 1).sum()) == 2
    assert mask.sum() == 2 and heat[0, 0, 11, 11] < 1 and mask[0, 0, 11, 11] == 0  # the invisible dot's cell
    assert ignore[0, 0, 11, 11] and ignore[0, 0, 9, 13] and not ignore[0, 0, 4, 4]
    assert not ignore[0, 0, 12, 10]  # a visible dot's own cell stays a positive
    assert not ignore[0, 0, :6, :6].any() and int(ignore.sum()) > 9
    # all visible (or no column): the old targets, nothing ignored
    old = dot_targets(points, (32, 32), 2, 2.0)
    assert int((old.heat == 1).sum()) == 3 and not dot_ignore(points, None, (32, 32), 2, 2.0).any()

    # the loss does not see the ignored cells: changing the logits there changes nothing
    torch.manual_seed(0)
    logits = torch.randn(1, 1, 16, 16)
    moved = logits.clone()
    moved[ignore & (heat < 1)] += 5.0
    base = heat_focal_loss(logits, heat, ignore=ignore)
    assert torch.isclose(base, heat_focal_loss(moved, heat, ignore=ignore))
    assert not torch.isclose(heat_focal_loss(logits, heat), heat_focal_loss(moved, heat))
    # total_loss reads the batch's `visible` key; without it every dot counts
    outputs = {"seg": torch.randn(1, 3, 32, 32), "heat": logits, "offset": torch.zeros(1, 2, 16, 16)}
    batch = {"mask": torch.ones(1, 32, 32, dtype=torch.int64), "points": points, "n_points": torch.tensor([3])}
    _, with_vis = total_loss(outputs, {**batch, "visible": visible}, LossSettings())
    _, without = total_loss(outputs, batch, LossSettings())
    assert torch.isclose(with_vis["heat"], base) and not torch.isclose(without["heat"], base)
    outputs_moved = {**outputs, "heat": moved}
    _, with_vis_moved = total_loss(outputs_moved, {**batch, "visible": visible}, LossSettings())
    assert torch.isclose(with_vis["heat"], with_vis_moved["heat"])


# --- data-loading workers -----------------------------------------------------------------------


def _first_batches(settings, n=2):
    from data.dataset import SmpDataset
    from data.manifest import read_manifest
    from models.train import _loader, _sampler

    ds = SmpDataset(
        read_manifest(settings.train_manifest, split="train"),
        settings.data.model_copy(update={"mode": "train", "seed": settings.seed}),
        settings.augment,
    )
    sampler = _sampler(settings, len(ds), 0, 1)
    sampler.set_epoch(0)
    loader = _loader(settings, ds, sampler, torch.device("cpu"))
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_worker_loading_is_reproducible_and_equals_in_process_loading(tiny_data, tmp_path):
    from models.train import TrainSettings

    s = _tiny_settings(tiny_data, tmp_path / "r", "optim.steps_per_epoch=2")
    assert s.num_workers is None and s.workers(torch.device("cpu")) == 1
    a = _first_batches(s)
    b = _first_batches(s)
    serial = _first_batches(s.model_copy(update={"num_workers": 0}))
    for x, y, z in zip(a, b, serial):
        for k in ("image", "mask", "index", "origin", "visible"):
            assert torch.equal(x[k], y[k]) and torch.equal(x[k], z[k]), k
    other = _first_batches(s.model_copy(update={"seed": 1}))
    assert not torch.equal(a[0]["image"], other[0]["image"])
    assert isinstance(s, TrainSettings)


class _Probe(torch.utils.data.Dataset):
    """What a worker sees: its torch threads and a draw from its generator."""

    worker_rng = None

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.tensor([float(torch.get_num_threads()), float(self.worker_rng.random())])


def test_worker_init_limits_threads_and_seeds_from_run_seed_and_worker_id():
    from torch.utils.data import DataLoader

    from data.dataset import WorkerInit

    def run(seed, workers=2):
        return torch.cat(list(DataLoader(_Probe(), batch_size=1, num_workers=workers, worker_init_fn=WorkerInit(seed))))

    a, b, c = run(7), run(7), run(8)
    assert (a[:, 0] == 1).all()
    assert torch.equal(a, b) and not torch.equal(a[:, 1], c[:, 1])
    assert a[0, 1] != a[1, 1]  # two workers, two streams


def test_evaluate_compares_models_on_datasets_in_one_mlflow_run(tiny_data, tmp_path, monkeypatch):
    """Several --model and --data: every pair scored, OUT/comparison.csv, child runs of one MLflow run."""
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    from models.bundled import DEFAULT_WEIGHTS

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    other = tmp_path / "copy.pt"
    other.write_bytes(DEFAULT_WEIGHTS.read_bytes())
    out = tmp_path / "cmp"
    assert (
        smp(
            [
                "evaluate",
                "--model",
                str(DEFAULT_WEIGHTS),
                "--model",
                str(other),
                "--data",
                str(tiny_data),
                "--data",
                str(tiny_data),
                "--split",
                "train",
                "--out",
                str(out),
                "--overlays",
                "0",
            ]
        )
        == 0
    )
    assert (
        smp(
            [
                "evaluate",
                "--data",
                str(tiny_data),
                "--data",
                str(tiny_data),
                "--split",
                "train",
                "--split",
                "val",
                "--split",
                "test",
                "--no-mlflow",
            ]
        )
        == 2
    )  # three splits for two datasets
    table = pd.read_csv(out / "comparison.csv")
    assert len(table) == 4 and set(table["model"]) == {str(DEFAULT_WEIGHTS), str(other)}
    assert table["score"].nunique() == 1  # the same weights on the same photos score the same
    assert len(list(out.glob("*/*/summary.json"))) == 4
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    exp = client.get_experiment_by_name("smp-segmenter-evaluate")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 4
    assert "comparison.csv" in {a.path for a in client.list_artifacts(parents[0].info.run_id)}
