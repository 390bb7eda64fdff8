"""What a run folder records of the machine that trained it."""

from __future__ import annotations

import json

from nucstudy.engine import run_folder
from nucstudy.engine.run_folder import (
    ENV_FILE,
    WORKERS_REDRAW,
    augmentation_frozen,
    cpu_model,
    new_segment,
    write_env,
)


def test_env_names_the_cpu_model_that_trained_the_run(tmp_path):
    """bf16 results depend on the CPU model, so env.json says which one it was."""
    written = json.loads(write_env(tmp_path, threads=1).read_text())
    assert written == json.loads((tmp_path / ENV_FILE).read_text())
    assert written["cpu_model"] == cpu_model() and written["threads"] == 1


def test_cpu_model_falls_back_to_the_platform_without_proc_cpuinfo(monkeypatch):
    def no_file(*args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr("builtins.open", no_file)
    monkeypatch.setattr(run_folder.platform, "processor", lambda: "arm")
    cpu_model.cache_clear()
    try:
        assert cpu_model() == "arm"
        monkeypatch.setattr(run_folder.platform, "processor", lambda: "")
        cpu_model.cache_clear()
        assert cpu_model() is None
    finally:
        cpu_model.cache_clear()


def test_a_new_segment_records_that_workers_draw_each_epoch():
    assert new_segment(0)[WORKERS_REDRAW] is True
    old = {"segments": [{"threads": 1}]}
    assert augmentation_frozen(old, workers=4, augment=True)
    assert not augmentation_frozen(old, workers=0, augment=True)
    assert not augmentation_frozen(old, workers=4, augment=False)
    assert not augmentation_frozen({"segments": [new_segment(0)]}, workers=4, augment=True)
    assert augmentation_frozen({"threads": 1}, workers=4, augment=True)  # before segments
