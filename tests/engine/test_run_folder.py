"""What a run folder records of the machine that trained it."""

from __future__ import annotations

import io
import json

from nucstudy.engine import run_folder
from nucstudy.engine.run_folder import (
    ENV_FILE,
    WORKERS_REDRAW,
    augmentation_frozen,
    cpu_model,
    cpu_vector_extensions,
    earlier_segments,
    new_segment,
    trained_in_bf16,
    write_env,
)


def test_env_names_the_cpu_model_that_trained_the_run(tmp_path):
    """bf16 results depend on the CPU model, so env.json says which one it was."""
    written = json.loads(write_env(tmp_path, threads=1).read_text())
    assert written == json.loads((tmp_path / ENV_FILE).read_text())
    assert written["cpu_model"] == cpu_model() and written["threads"] == 1
    assert written["cpu_vector_extensions"] == list(cpu_vector_extensions())


def test_vector_extensions_are_read_from_the_cpu_flags(monkeypatch):
    flags = "flags\t\t: fpu sse2 avx avx2 avx512f avx512_bf16 amx_tile amx_bf16\n"
    monkeypatch.setattr("builtins.open", lambda *args, **kwargs: io.StringIO(flags))
    cpu_vector_extensions.cache_clear()
    try:
        assert cpu_vector_extensions() == ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    finally:
        cpu_vector_extensions.cache_clear()


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
    assert new_segment(0, bf16=True)[WORKERS_REDRAW] is True
    old = {"segments": [{"threads": 1}]}
    assert augmentation_frozen(old, workers=4, augment=True)
    assert not augmentation_frozen(old, workers=0, augment=True)
    assert not augmentation_frozen(old, workers=4, augment=False)
    assert not augmentation_frozen(
        {"segments": [new_segment(0, bf16=True)]}, workers=4, augment=True
    )
    assert augmentation_frozen({"threads": 1}, workers=4, augment=True)  # before segments


def test_each_segment_names_its_machine_and_precision(tmp_path):
    """A run resumed on another CPU may train in another precision: each segment says which."""
    segment = new_segment(5, bf16=False)
    assert segment["cpu_model"] == cpu_model() and segment["bf16"] is False
    assert segment["from_step"] == 5
    # an env.json from before segments recorded them: its top level is the last writer's
    first, second = {"from_step": 0, "to_step": 10}, {"from_step": 10, "to_step": 20}
    env = {"segments": [first, second], "cpu_model": "CPU A", "fast_path": {"bf16": True}}
    (tmp_path / ENV_FILE).write_text(json.dumps(env))
    resumed = earlier_segments(tmp_path / ENV_FILE)
    assert resumed[1] == {**second, "cpu_model": "CPU A", "bf16": True}
    assert resumed[0] == first  # its machine is not known: left unsaid
    recorded = {**second, "cpu_model": "CPU B", "bf16": False}
    (tmp_path / ENV_FILE).write_text(json.dumps({**env, "segments": [first, recorded]}))
    assert earlier_segments(tmp_path / ENV_FILE)[1] == recorded  # its own record kept


def test_a_run_trained_in_both_precisions_says_so():
    assert trained_in_bf16({"fast_path": {"bf16": True}}) is True  # before segments said it
    assert trained_in_bf16({}) is None
    both = {"segments": [{"bf16": True}, {"bf16": False}], "fast_path": {"bf16": False}}
    assert trained_in_bf16(both) == "mixed"
    one = {"segments": [{"threads": 1}, {"bf16": False}], "fast_path": {"bf16": False}}
    assert trained_in_bf16(one) is False
