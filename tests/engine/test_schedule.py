"""The learning rate by step, run lengths in steps or images, and the weight average."""

import math

import pandas as pd
import pytest
import torch
from torch import nn

from nucstudy.engine.schedule import LRSchedule, milestone_steps, weight_average
from nucstudy.study.presets import preset


def test_step_schedule_multiplies_at_each_milestone():
    schedule = LRSchedule(1.0, 100, "step", milestones=(50, 70), gamma=0.1)
    assert [schedule(s) for s in (0, 49, 50, 69, 70, 99)] == pytest.approx(
        [1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    )


def test_cosine_falls_from_the_rate_to_zero_after_the_warmup():
    schedule = LRSchedule(2.0, 110, "cosine", warmup_steps=10)
    # linear warm-up: lr/10, 2 lr/10, ... lr at the warm-up's last step
    assert [schedule(s) for s in (0, 4, 9)] == pytest.approx([0.2, 1.0, 2.0])
    assert schedule(10) == pytest.approx(2.0)
    assert schedule(60) == pytest.approx(1.0)  # half-way through the cosine
    assert schedule(110) == pytest.approx(0.0)
    assert schedule(35) == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 0.25)))


def test_bad_schedules_are_refused():
    with pytest.raises(ValueError, match="'step' or 'cosine'"):
        LRSchedule(1.0, 10, "linear")
    with pytest.raises(ValueError, match="warmup_steps"):
        LRSchedule(1.0, 10, warmup_steps=10)
    with pytest.raises(ValueError, match="at least one step"):
        LRSchedule(1.0, 0)


def test_milestones_as_fractions_or_epochs():
    assert milestone_steps([0.5, 0.7], [25, 35], 6000, 10) == (3000, 4200)
    assert milestone_steps(None, [25, 35], 500, 10) == (250, 350)


def test_a_config_gives_its_length_in_steps_images_or_epochs():
    config = preset("smoke", epochs=3, batch_size=4)
    assert config.total_steps(steps_per_epoch=5) == 15
    assert config.replace(steps=7).total_steps(5) == 7
    assert config.replace(images=30).total_steps(5) == 7  # 30 // 4
    paper = preset("paper", steps=6000, lr_milestone_fractions=[0.5, 0.7])
    schedule = paper.lr_schedule_of(steps_per_epoch=10)
    assert schedule.milestones == (3000, 4200) and schedule.total_steps == 6000
    # the paper's epochs: x0.1 at epochs 25 and 35 of 10 steps each
    assert preset("paper").lr_schedule_of(10).milestones == (250, 350)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"steps": 10, "images": 40}, "steps or images"),
        ({"steps": 0}, "steps must be >= 1"),
        ({"images": 2}, "at least one batch"),
        ({"lr_schedule": "linear"}, "lr_schedule"),
        ({"lr_milestone_fractions": [0.5, 1.2]}, "lr_milestone_fractions"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"dice_classes": "some"}, "dice_classes"),
        ({"sampling": "often"}, "sampling"),
        ({"loss_weights": {"hv_grad": 1.0}}, "unknown term"),
        ({"loss_weights": {"hv_mse": -1.0}}, "loss_weights must be >= 0"),
        ({"val_fraction": 1.0}, "val_fraction"),
    ],
)
def test_bad_recipe_fields_are_named(changes, message):
    with pytest.raises(ValueError, match=message):
        preset("smoke", **changes)


def test_the_weight_average_follows_its_decay():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    average = weight_average(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(2.0)
    average.update_parameters(model)  # the first update copies
    with torch.no_grad():
        model.weight.fill_(3.0)
    average.update_parameters(model)
    assert average.module.weight.item() == pytest.approx(0.9 * 2.0 + 0.1 * 3.0)


def _steps_config(**changes):
    return preset(
        "smoke",
        synthetic_patches=16,
        device="cpu",
        steps=7,
        lr_schedule="cosine",
        warmup_steps=2,
        eval_every=1,
        **changes,
    )


def test_a_run_in_steps_stops_part_way_and_records_steps(tmp_path):
    from nucstudy.engine.trainer import Trainer

    trainer = Trainer(_steps_config(), run_dir=tmp_path, progress=False)
    history = trainer.fit()
    assert trainer.step == 7 and trainer.steps_per_epoch == 3
    assert history["step"].tolist() == [3, 6, 7]
    assert history["images_seen"].tolist() == [12, 24, 28]
    # the lr of each epoch's first step, from the cosine after two warm-up steps
    expected = [trainer.lr_at(step) for step in (0, 3, 6)]
    assert history["lr"].tolist() == pytest.approx(expected)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(trainer.lr_at(6))


def test_resume_mid_schedule_equals_an_uninterrupted_run(tmp_path, straight_and_resumed):
    config = _steps_config(ema_decay=0.5, sampling="rare", loss_weights={"hv_msge": 1.0})
    straight, resumed = straight_and_resumed(config)
    for a, b in ((straight.model, resumed.model), (straight.kept_model, resumed.kept_model)):
        state_a, state_b = a.state_dict(), b.state_dict()
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    a = pd.read_csv(tmp_path / "straight" / "history.csv")
    b = pd.read_csv(tmp_path / "resumed" / "history.csv")
    assert a["train_total"].tolist() == b["train_total"].tolist()
    assert a["step"].tolist() == b["step"].tolist() == [3, 6, 7]


def test_the_average_is_what_the_checkpoint_keeps_and_evaluation_scores(tmp_path):
    from nucstudy.engine.checkpoint import load_checkpoint
    from nucstudy.engine.trainer import Trainer
    from nucstudy.study.evaluate import evaluate

    config = _steps_config(ema_decay=0.5)
    trainer = Trainer(config, run_dir=tmp_path, progress=False)
    trainer.fit()
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    for name, value in trainer.average.module.state_dict().items():
        assert torch.equal(state["model"][name], value)
    trained = trainer.model.state_dict()
    assert any(not torch.equal(state["model"][k], trained[k]) for k in trained)
    assert all(torch.equal(state["train_model"][k], trained[k]) for k in trained)
    metrics = evaluate(tmp_path, config.open_data("test"), which="last", progress=False)
    assert metrics["step"] == 7 and metrics["images_seen"] == 28


def test_the_average_gets_batch_norm_statistics_of_its_own_weights(tmp_path):
    from nucstudy.engine.trainer import Trainer

    trainer = Trainer(_steps_config(ema_decay=0.5), run_dir=tmp_path / "ema", progress=False)
    history = trainer.fit()
    plain = Trainer(_steps_config(), run_dir=tmp_path / "plain", progress=False).fit()
    assert history["train_total"].tolist() == plain["train_total"].tolist()  # same training
    average = trainer.kept_model
    norm = next(m for m in average.modules() if isinstance(m, nn.BatchNorm2d))
    means = []  # the first batch norm's input depends on the averaged weights before it only
    hook = norm.register_forward_hook(
        lambda module, inputs, output: means.append(inputs[0].float().mean(dim=(0, 2, 3)))
    )
    trainer._seed_epoch(trainer.epoch - 1)
    average.eval()
    with torch.no_grad(), trainer.fast_path.autocast():
        for batch in trainer.loader:
            average(batch["image"].contiguous(memory_format=trainer.fast_path.memory_format))
    hook.remove()
    torch.testing.assert_close(norm.running_mean, torch.stack(means).mean(0))


def test_no_validation_trains_on_every_source_and_keeps_the_last(tmp_path):
    from nucstudy.engine.checkpoint import load_checkpoint
    from nucstudy.engine.trainer import Trainer

    trainer = Trainer(_steps_config(val_fraction=0.0), run_dir=tmp_path, progress=False)
    history = trainer.fit()
    assert len(trainer.train_idx) == 16 and trainer.val_idx.size == 0
    assert "val_pq" not in history.columns
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["step"] == 7


def test_a_resumed_run_records_every_segment(tmp_path, straight_and_resumed, monkeypatch):
    import json

    from nucstudy.study.evaluate import training_minutes

    monkeypatch.setenv("NUCSTUDY_BESIDE", "nothing")
    straight_and_resumed(_steps_config())
    env = json.loads((tmp_path / "resumed" / "env.json").read_text())
    first, second = env["segments"]
    assert (first["from_step"], first["to_step"], first["finished"]) == (0, 3, None)
    assert first["last_checkpoint"] is not None  # stopped after its first epoch
    assert (second["from_step"], second["to_step"]) == (3, 7) and second["finished"]
    assert second["beside"] == "nothing" and second["threads"] >= 1
    assert env["started"] == second["started"] and env["finished"] == second["finished"]
    assert training_minutes(env) >= 0
    straight = json.loads((tmp_path / "straight" / "env.json").read_text())
    assert len(straight["segments"]) == 1


def test_training_minutes_sum_segments_and_read_old_env_files():
    from nucstudy.study.evaluate import training_minutes

    old = {"started": "2026-12-01T10:00:00+0000", "finished": "2026-12-01T10:30:00+0000"}
    assert training_minutes(old) == 30
    segments = [
        {
            "started": "2026-12-01T10:00:00+0000",
            "finished": None,
            "last_checkpoint": "2026-12-01T10:20:00+0000",
        },
        {"started": "2026-12-02T09:00:00+0000", "finished": "2026-12-02T09:45:00+0000"},
    ]
    assert training_minutes({"segments": segments}) == 65


def test_a_detector_keeps_a_weight_average_too(tmp_path):
    """Mask R-CNN's forward needs its targets in training mode: the average's batch-norm
    statistics are recomputed through the method's training forward, not model(images)."""
    from nucstudy.engine.trainer import Trainer

    config = _steps_config(
        ema_decay=0.5,
        model="maskrcnn",
        loss="maskrcnn",
        class_weights=None,
        model_options={"backbone": "resnet18", "upscale": 1.0},
    )
    trainer = Trainer(config, run_dir=tmp_path, progress=False)
    trainer.fit()
    norms = [m for m in trainer.kept_model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(int(m.num_batches_tracked) > 0 for m in norms)  # recomputed
