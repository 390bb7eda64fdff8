"""The fast path: chosen at run time, switchable, recorded; readable logs off a terminal."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from nucstudy.engine import device as device_module
from nucstudy.engine.device import choose_fast_path
from nucstudy.engine.inference import predict_labels
from nucstudy.engine.trainer import Trainer
from nucstudy.models import build_model
from nucstudy.study.evaluate import train_and_evaluate
from nucstudy.study.presets import preset
from nucstudy.study.registry import collect

CPU = torch.device("cpu")


@pytest.fixture
def cpu_without_bf16(monkeypatch):
    """Simulate a CPU without AVX512-BF16 or AMX."""
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: False)


@pytest.fixture
def cpu_with_bf16(monkeypatch):
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: True)


def test_bf16_is_taken_only_where_the_cpu_supports_it(cpu_without_bf16):
    path = choose_fast_path(CPU, enabled=True)
    assert not path.bf16
    assert "without native bf16" in path.reason
    with path.autocast():
        assert not torch.is_autocast_enabled("cpu")


def test_a_supporting_cpu_gets_bf16_and_channels_last(cpu_with_bf16):
    path = choose_fast_path(CPU, enabled=True)
    assert path.bf16 and path.channels_last
    with path.autocast():
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_the_switch_turns_everything_off(cpu_with_bf16):
    path = choose_fast_path(CPU, enabled=False)
    assert not path.bf16 and not path.channels_last
    assert path.memory_format == torch.contiguous_format


def test_detection_reads_the_cpu():
    flags = open("/proc/cpuinfo").read() if sys.platform == "linux" else ""
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    if sys.platform == "linux":
        assert device_module.cpu_has_native_bf16() == (
            native and torch.backends.mkldnn.is_available()
        )


@pytest.mark.parametrize("mixed_precision", [True, False])
def test_runs_with_the_fast_path_on_and_off_train_and_evaluate(tmp_path, mixed_precision):
    config = preset("smoke", device="cpu", mixed_precision=mixed_precision, out_root=str(tmp_path))
    metrics = train_and_evaluate(config, progress=False)
    expected = choose_fast_path(CPU, mixed_precision)
    env = json.loads((config.run_dir / "env.json").read_text())
    assert env["fast_path"] == expected.to_dict()
    assert metrics["fast_path"] == expected.to_dict()
    assert 0 <= metrics["overall"]["pq"] <= 1
    assert collect(tmp_path)["bf16"].tolist() == [expected.bf16]


def test_an_unsupported_cpu_trains_in_float32(tmp_path, cpu_without_bf16):
    trainer = Trainer(preset("smoke", device="cpu"), run_dir=tmp_path, progress=False)
    assert not trainer.fast_path.bf16
    trainer.fit()
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["fast_path"]["bf16"] is False
    assert env["threads"] == torch.get_num_threads()


def test_overlapped_post_processing_gives_the_same_labels(synthetic_small):
    torch.manual_seed(0)
    model = build_model("seresunet", 7, width=8, depth=3)
    images = np.asarray(synthetic_small.images[:6, :64, :64])
    inline = predict_labels(model, images, 0.5, batch_size=2, device="cpu")
    overlapped = predict_labels(
        model, images, 0.5, batch_size=2, device="cpu", postprocess_workers=1
    )
    np.testing.assert_array_equal(inline, overlapped)
    with pytest.raises(ValueError, match="postprocess_workers"):
        predict_labels(model, images, 0.5, postprocess_workers=-1)


def test_a_run_off_a_terminal_logs_one_line_per_epoch(tmp_path):
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "nucstudy.cli", "train", "--preset", "smoke"]
        + ["--set", "epochs=3", "--device", "cpu", "--out", str(run)],
        capture_output=True,
        text=True,
        check=True,
    )
    epoch_lines = [line for line in done.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split(" (step")[0] for line in epoch_lines] == [
        "epoch 1/3",
        "epoch 2/3",
        "epoch 3/3",
    ]
    assert all("val_mpq+" in line and "images/s" in line for line in epoch_lines)
    assert "\r" not in done.stdout + done.stderr  # no progress-bar redraws
    assert len(done.stderr) < 2000


def test_compile_is_opt_in_and_wraps_the_training_network(tmp_path, monkeypatch):
    compiled = []

    def fake_compile(module):
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    Trainer(preset("smoke", device="cpu"), run_dir=tmp_path / "a", progress=False)
    assert compiled == []
    trainer = Trainer(
        preset("smoke", device="cpu", compile=True), run_dir=tmp_path / "b", progress=False
    )
    assert compiled == [trainer.model]


def test_loader_workers_never_take_the_cores_of_a_cpu_run(monkeypatch):
    monkeypatch.setattr(device_module.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert device_module.loader_workers(4, CPU) == 0
    monkeypatch.setattr(device_module.os, "cpu_count", lambda: 16)
    assert device_module.loader_workers(4, CPU) == 4
    assert device_module.loader_workers(1, CPU) == 1
    assert device_module.loader_workers(4, torch.device("cuda")) == 4
