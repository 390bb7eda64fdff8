"""The GPU study's command, checked end to end on the CPU with the smoke preset."""

from __future__ import annotations

import json

import nbformat
import pytest

from nucstudy.study.ablations import ABLATIONS
from nucstudy.study.gpu_study import RECORD_FILE, main, plan
from nucstudy.study.presets import preset


def test_the_plan_trains_seed_zero_and_the_baselines_before_more_seeds():
    runs = plan(preset("paper", data="synthetic"), [0, 1])
    names = [config.name for _, _, config in runs]
    assert names[:6] == [
        "full-seed0",
        "no-SE-seed0",
        "no-CA-seed0",
        "no-cw-seed0",
        "hovernet-seed0",
        "maskrcnn-seed0",
    ]
    assert len(names) == 6 + len(ABLATIONS) and names[-1] == "no-cw-seed1"
    models = {config.name: config.model for _, _, config in runs}
    assert models["hovernet-seed0"] == "hovernet" and models["maskrcnn-seed0"] == "maskrcnn"
    epochs = {config.epochs for _, _, config in runs}
    assert epochs == {50}  # one protocol for all of them


def test_no_gpu_gets_one_clear_error(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit):
        main(["--data", "synthetic"])
    assert "no CUDA GPU" in capsys.readouterr().err


@pytest.mark.slow
def test_the_same_command_runs_end_to_end_on_a_cpu(tmp_path):
    out, pages = tmp_path / "runs", tmp_path / "pages"
    args = [
        "--data",
        "synthetic",
        "--preset",
        "smoke",
        "--seeds",
        "0",
        "1",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--pages",
        str(pages),
        "--no-book",
        "--throughput-batch",
        "2",
        "--minutes",
        "0",
    ]
    assert main(args) == 0
    record = json.loads((out / RECORD_FILE).read_text())
    assert [row["mode"] for row in record["throughput"]][0] == "float32"
    assert all(row["images_per_s"] > 0 for row in record["throughput"])
    assert len(record["runs"]) == 6  # seed 0 of the four variants and the two baselines
    assert sorted(record["skipped"]) == sorted(
        f"{v}-seed1" for v in ("full", "no-SE", "no-CA", "no-cw")
    )
    for name in record["runs"]:
        assert (out / name / "metrics.json").is_file()
    table1 = nbformat.read(pages / "table1.ipynb", as_version=4)
    glued = {}
    for cell in table1.cells:
        for output in cell.get("outputs", []):
            record_ = output.get("metadata", {}).get("scrapbook")
            if record_:
                glued[record_["name"]] = output["data"][record_["mime_prefix"] + "text/plain"]
    assert int(glued["t1_pending"]) == 0  # all three Table I methods trained
    assert (pages / "ablations.ipynb").is_file()
    # again: everything is reused, nothing trained, the skipped seeds still skipped
    before = (out / "full-seed0" / "env.json").read_text()
    assert main(args) == 0
    assert (out / "full-seed0" / "env.json").read_text() == before
