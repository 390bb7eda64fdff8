"""The registry's reading of one run folder: how many patches and steps an epoch was."""

import pandas as pd
import pytest

from nucstudy.study.compute_budget import training_record
from nucstudy.study.presets import preset
from nucstudy.study.registry import epoch_images, epoch_steps


def _run(tmp_path, batch_size: int, history: dict) -> object:
    config = preset("smoke", name="run-seed0", out_root=str(tmp_path), batch_size=batch_size)
    config.run_dir.mkdir(parents=True)
    config.save(config.run_dir / "config.json")
    pd.DataFrame(history).to_csv(config.run_dir / "history.csv", index=False)
    return config.run_dir


def test_an_epoch_is_read_from_the_throughput_of_an_old_history(tmp_path):
    # 336 patches of batch 8 an epoch; the second epoch was cut short by a resume
    folder = _run(tmp_path, 8, {"epoch": [1, 2, 3, 4], "images_per_s": [33.6, 10.0, 42.0, 16.8],
                                "seconds": [10.0, 3.2, 8.0, 20.0]})  # fmt: skip
    assert epoch_images(folder) == 336
    assert epoch_steps(folder) == 42


def test_an_epoch_is_read_from_the_steps_and_images_counted_in_a_new_history(tmp_path):
    # the first epoch's throughput includes a compilation: the counts, not the rate, decide
    folder = _run(tmp_path, 16, {"epoch": [1, 2, 3], "images_per_s": [1.0, 40.0, 40.0],
                                 "seconds": [16.0, 8.4, 8.4], "step": [21, 42, 63],
                                 "images_seen": [336, 672, 1008]})  # fmt: skip
    assert epoch_images(folder) == 336
    assert epoch_steps(folder) == 21


def test_a_folder_without_an_epoch_is_named(tmp_path):
    with pytest.raises(ValueError, match="no history.csv"):
        epoch_steps(tmp_path)
    (tmp_path / "history.csv").write_text("epoch,images_per_s,seconds\n")
    with pytest.raises(ValueError, match="no epoch recorded"):
        epoch_images(tmp_path)


def test_a_run_that_predates_the_step_column_is_given_its_steps_and_images(tmp_path):
    # Table I's paper-scale rows: 3 epochs of 336 patches at batch 8, no step column
    folder = _run(tmp_path, 8, {"epoch": [1, 2, 3], "images_per_s": [33.6, 33.6, 42.0],
                                "seconds": [10.0, 10.0, 8.0]})  # fmt: skip
    record = training_record(folder, None)
    assert (record["steps"], record["images seen"]) == (126, 1008)
