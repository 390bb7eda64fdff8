"""Training end to end: CLI smoke run, resume, DDP, kills, tampering, divergence."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from nucstudy.cli import main as cli
from nucstudy.engine.checkpoint import CheckpointError, load_checkpoint
from nucstudy.engine.trainer import Trainer, TrainingError
from nucstudy.study.experiment import ExperimentConfig
from nucstudy.study.presets import preset

TESTS = Path(__file__).resolve().parent


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_smoke_training_through_the_cli(tmp_path, capsys):
    run = tmp_path / "runs" / "x"
    assert (
        cli(["train", "--preset", "smoke", "--data", "synthetic", "--out", str(run), "--quiet"])
        == 0
    )
    for name in (
        "config.json",
        "env.json",
        "history.csv",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
    ):
        assert (run / name).is_file(), name
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    for column in (
        "train_np_ce",
        "train_tp_dice",
        "train_total",
        "lr",
        "val_mpq+",
        "val_r2",
        "val_pq",
        "seconds",
        "images_per_s",
    ):
        assert column in history.columns
    assert history["lr"].tolist() == [1e-3, 1e-4]  # x0.1 at the milestone
    env = json.loads((run / "env.json").read_text())
    assert env["started"] and env["finished"] and env["torch"]
    assert ExperimentConfig.load(run / "config.json").name == "x"

    assert cli(["evaluate", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(pd.read_csv(run / "per_image.csv")) == 8 * 6  # 8 test patches x 6 classes
    assert set(metrics["overall"]) >= {"mpq+", "r2", "pq"}
    assert set(metrics["per_class"]) == {
        "neutrophil",
        "epithelial",
        "lymphocyte",
        "plasma",
        "eosinophil",
        "connective",
    }
    assert cli(["predict", str(run), "--out", str(tmp_path / "pred")]) == 0
    assert (tmp_path / "pred" / "predictions.npy").is_file()
    assert (tmp_path / "pred" / "counts.csv").is_file()
    assert "mPQ+" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--data", "consep:/no/such/folder"], "folder /no/such/folder not found"),
        (["train", "--data", "imagenet"], "unknown data source"),
        (["train", "--epochs", "two"], "invalid int value"),
        (["train", "--set", "lr"], "expected KEY=VALUE"),
        (["train", "--set", "colour=red"], "unknown config field"),
        (["evaluate", "/no/run"], "not a run folder"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(argv, message, capsys):
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and err.startswith("nucstudy: error")


def test_resume_reaches_the_same_weights(tmp_path, straight_and_resumed):
    config = preset("smoke", epochs=3, device="cpu", lr_milestones=[2])
    straight, resumed = straight_and_resumed(config)
    assert _same_weights(straight.model.state_dict(), resumed.model.state_dict())
    a = pd.read_csv(tmp_path / "straight" / "history.csv")
    b = pd.read_csv(tmp_path / "resumed" / "history.csv")
    assert a["train_total"].tolist() == b["train_total"].tolist()


def test_resume_refuses_another_config(tmp_path):
    config = preset("smoke", epochs=1, device="cpu")
    Trainer(config, run_dir=tmp_path, progress=False).fit()
    with pytest.raises(TrainingError, match="another config"):
        Trainer(config.replace(lr=0.5), run_dir=tmp_path, resume=True, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["seresunet", "maskrcnn"])
def test_ddp_two_processes_end_with_identical_weights(tmp_path, model):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS.parents[1])}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        str(TESTS / "ddp_worker.py"),
        str(tmp_path),
        model,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert _same_weights(rank0, rank1)
    if model == "seresunet":
        untrained = Trainer(preset("smoke", device="cpu"), run_dir=tmp_path / "x", progress=False)
        assert not _same_weights(rank0, untrained.model.state_dict())
    assert json.loads((tmp_path / "run" / "env.json").read_text())["world_size"] == 2


@pytest.mark.slow
def test_a_killed_run_leaves_a_loadable_checkpoint(tmp_path):
    run = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "nucstudy.cli",
        "train",
        "--preset",
        "smoke",
        "--quiet",
        "--out",
        str(run),
        "--epochs",
        "200",
        "--set",
        "synthetic_size=128",
        "--set",
        "synthetic_patches=16",
        "--device",
        "cpu",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = run / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline and not last.exists():
        time.sleep(0.05)
    time.sleep(0.3)  # now somewhere inside a later epoch, or writing a checkpoint
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert last.exists(), process.stderr.read().decode()[-2000:]
    state = load_checkpoint(last)
    assert 1 <= state["epoch"] < 200
    config = ExperimentConfig.load(run / "config.json")
    resumed = Trainer(config, run_dir=run, resume=True, progress=False)
    assert resumed.epoch == state["epoch"]
    assert _same_weights(resumed.model.state_dict(), state["model"])


def test_tampered_checkpoints_are_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(["train", "--preset", "smoke", "--out", str(run), "--quiet", "--epochs", "1"]) == 0
    best = run / "checkpoints" / "best.pt"
    data = bytearray(best.read_bytes())
    data[len(data) // 2] ^= 0xFF
    best.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(best)
    assert cli(["evaluate", str(run)]) == 2
    assert "refusing to load" in capsys.readouterr().err

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    import hashlib
    import io

    buffer = io.BytesIO()
    torch.save({"model": Payload()}, buffer)
    best.write_bytes(buffer.getvalue())
    (run / "checkpoints" / "best.pt.sha256").write_text(
        hashlib.sha256(buffer.getvalue()).hexdigest()
    )
    with pytest.raises(CheckpointError, match="not a safe checkpoint"):
        load_checkpoint(best)
    (run / "checkpoints" / "best.pt.sha256").unlink()
    with (  # without its digest it warns, and still refuses anything but plain values
        pytest.warns(UserWarning, match="no best.pt.sha256"),
        pytest.raises(CheckpointError, match="not a safe checkpoint"),
    ):
        load_checkpoint(best)


def test_a_diverging_loss_stops_with_the_last_good_checkpoint(tmp_path, monkeypatch):
    config = preset("smoke", epochs=3, device="cpu")
    trainer = Trainer(config, run_dir=tmp_path, progress=False)
    step = Trainer._step

    def poisoned(self, batch, epoch):
        if epoch == 1:
            batch = {**batch, "hv": batch["hv"] * float("nan")}
        return step(self, batch, epoch)

    monkeypatch.setattr(Trainer, "_step", poisoned)
    with pytest.raises(TrainingError, match="loss became nan in epoch 2"):
        trainer.fit()
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["epoch"] == 1


def test_synthetic_mix_grows_the_training_side_and_leaves_validation_real(tmp_path):
    from nucstudy.data import save_conic, synthetic_conic

    save_conic(synthetic_conic(16, size=64, seed=7, patches_per_source=2), tmp_path / "conic")
    real = preset("smoke", device="cpu", data=f"conic:{tmp_path / 'conic'}", epochs=1)
    plain = Trainer(real.replace(out_root=str(tmp_path / "plain")), progress=False)
    mixed = Trainer(
        real.replace(out_root=str(tmp_path / "mixed"), synthetic_mix=2.0), progress=False
    )
    assert mixed.val_idx.tolist() == plain.val_idx.tolist()
    assert len(mixed.train_idx) == 3 * len(plain.train_idx)
    assert len(mixed.train_set) == len(mixed.train_idx)
    assert mixed.data.patch_info["source"].iloc[-1].startswith("synthetic-")
    mixed.fit()
    trained_on = json.loads((mixed.run_dir / "trained_on.json").read_text())
    assert len(trained_on["fingerprints"]) == len(mixed.data)
