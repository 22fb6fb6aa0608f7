import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

import genkit
from genkit.checkpoint import list_checkpoints, read_trainer_state, resolve_checkpoint
from genkit.training import Trainer, train


def test_few_steps_write_checkpoints_export_and_logs(tiny_cfg):
    cfg = tiny_cfg("train.sample_every=2")
    final = train(cfg)
    out = final.parent.parent
    assert [p.name for p in list_checkpoints(out)] == ["step-000002", "step-000004"]
    for name in ["config.yaml", "net.safetensors", "net_ema.safetensors", "trainer_state.json"]:
        assert (final / name).is_file()
    assert read_trainer_state(final)["step"] == 4
    assert list((out / "logs").rglob("events.out.tfevents*"))
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step-000002.png", "step-000004.png"]
    ema, raw = load_file(str(final / "net_ema.safetensors")), load_file(str(final / "net.safetensors"))
    assert ema.keys() == raw.keys() and any(not torch.equal(ema[k], raw[k]) for k in ema)
    model = genkit.load(out)
    assert model.sample(2, steps=2, progress=False).images.shape == (2, 1, 16, 16)


def test_resume_latest_reaches_identical_weights(tiny_cfg):
    cfg = tiny_cfg("model.unet.dropout=0.1")  # dropout draws from the global RNG, which is restored too
    final = train(cfg)
    uninterrupted = load_file(str(final / "net.safetensors"))
    shutil.rmtree(final)  # as if the run had died between step 2 and step 4
    resumed_cfg = tiny_cfg("model.unet.dropout=0.1", "train.resume=latest")
    trainer = Trainer(resumed_cfg)
    assert trainer.resume_candidates[0].name == "step-000002"
    resumed = trainer.fit()
    assert read_trainer_state(resumed)["step"] == 4
    again = load_file(str(resumed / "net.safetensors"))
    assert all(torch.equal(uninterrupted[k], again[k]) for k in uninterrupted)


def test_checkpoint_limit_and_resolution(tiny_cfg):
    final = train(tiny_cfg("train.max_steps=6", "train.checkpoint_every=1", "train.checkpoints_keep=2"))
    out = final.parent.parent
    assert [p.name for p in list_checkpoints(out)] == ["step-000005", "step-000006"]
    assert resolve_checkpoint(out) == final and resolve_checkpoint(final) == final


def test_bf16_and_gradient_accumulation_train(tiny_cfg):
    final = train(tiny_cfg("train.mixed_precision=bf16", "train.grad_accum=2", "train.max_steps=2"))
    state = read_trainer_state(final)
    assert (state["step"], state["bad_steps_total"], len(state["config_sha256"])) == (2, 0, 64)


def test_dit_trains_through_the_same_loop(tiny_cfg):
    final = train(tiny_cfg("model.name=dit", "train.max_steps=2"))
    model = genkit.load(final)
    assert type(model.net).__name__ == "DiT" and model.sample(2, steps=2, progress=False).images.shape == (2, 1, 16, 16)


def test_non_finite_steps_are_skipped_then_stop_the_run(tiny_cfg):
    import math

    from genkit.training import TrainingDiverged

    trainer = Trainer(tiny_cfg("train.max_steps=8", "train.max_bad_steps=3", "train.checkpoint_every=2"))
    real_loss = trainer.method.loss

    def poisoned(net, x0, y, generator, noise=None):
        loss = real_loss(net, x0, y, generator, noise)
        return loss * math.nan if trainer.step in (2, 5, 6, 7) else loss

    trainer.method.loss = poisoned
    before = {k: v.clone() for k, v in trainer.net.state_dict().items()}
    with pytest.raises(TrainingDiverged, match="3 consecutive steps.*step-000006"):
        trainer.fit()
    assert trainer.bad_steps_total == 4 and trainer.step == 8
    out = trainer.out
    last = list_checkpoints(out)[-1]
    assert last.name == "step-000006"  # skipped steps leave the weights good; nothing written after
    weights = load_file(str(last / "net.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values())
    assert any(not torch.equal(before[k], weights[k]) for k in weights)


@pytest.mark.slow
def test_compiled_training_writes_plain_weights(tiny_cfg):
    final = train(tiny_cfg("train.compile=true", "train.max_steps=2"))
    assert not any("_orig_mod" in k for k in load_file(str(final / "net.safetensors")))
    genkit.load(final)


class FixedTimeLoss:
    """A method with no randomness (every sample at t = 0.5, target x0), so that a batch's gradient
    depends only on its images: the full batch and its micro-batches must then agree."""

    def loss(self, net, x0, y, generator=None, noise=None):
        t = torch.full((len(x0),), 0.5, device=x0.device)
        return (net(x0, t, y).float() - x0).square().mean()

    def log_terms(self, loss, dims):
        return {}


def test_gradient_accumulation_gives_the_full_batch_gradient(tiny_cfg):
    def first_gradient(accumulation: int) -> list[torch.Tensor]:
        trainer = Trainer(tiny_cfg(f"train.grad_accum={accumulation}", "train.grad_clip=0", "model.unet.dropout=0"))
        trainer.method = FixedTimeLoss()
        grads = []
        trainer.optimizer.step = lambda: grads.extend(p.grad.clone() for p in trainer.net.parameters())
        trainer.train_step()
        return grads

    whole, accumulated = first_gradient(1), first_gradient(4)
    assert len(whole) == len(accumulated) > 0
    assert any(g.abs().max() > 0 for g in whole)
    for a, b in zip(whole, accumulated):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_adam_betas_set_the_optimizers_moments(tiny_cfg):
    """After one step AdamW's moments are (1 - beta1) g and (1 - beta2) g^2 of the step's gradient g."""
    trainer = Trainer(tiny_cfg("train.adam_betas=[0.5,0.9]", "train.grad_clip=0"))
    trainer.method = FixedTimeLoss()
    grads, step = [], trainer.optimizer.step

    def recorded_step(*args, **kwargs):
        grads.extend(p.grad.clone() for p in trainer.net.parameters())
        return step(*args, **kwargs)

    trainer.optimizer.step = recorded_step
    trainer.train_step()
    moments = [trainer.optimizer.state[p] for p in trainer.net.parameters()]
    assert len(grads) == len(moments) > 0 and any(g.abs().max() > 0 for g in grads)
    for g, m in zip(grads, moments):
        torch.testing.assert_close(m["exp_avg"], 0.5 * g)
        torch.testing.assert_close(m["exp_avg_sq"], 0.1 * g * g)


def test_mixed_precision_auto_defers_to_accelerate_and_otherwise_fits_the_hardware(monkeypatch):
    from genkit.training import mixed_precision

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert mixed_precision("no") == "no" and mixed_precision("fp16") == "fp16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert mixed_precision("auto") == "fp16"  # a V100 or T4: fp16 with loss scaling
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert mixed_precision("auto") == "bf16"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")  # accelerate launch --mixed_precision fp16
    assert mixed_precision("auto") is None and mixed_precision("bf16") == "bf16"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")  # the launcher's default is no choice
    assert mixed_precision("auto") == "bf16"


@pytest.mark.parametrize("precision", ["fp16", "auto"])
def test_fp16_and_auto_precision_train(tiny_cfg, precision):
    final = train(tiny_cfg(f"train.mixed_precision={precision}", "train.max_steps=2"))
    assert read_trainer_state(final)["step"] == 2


@pytest.mark.parametrize("schedule", ["constant_with_warmup", "linear"])
def test_lr_schedules_by_diffusers_name_and_grids_reach_the_tracker(tiny_cfg, schedule):
    cfg = tiny_cfg(f"train.lr_schedule={schedule}", "train.sample_every=2", "train.warmup_steps=2")
    final = train(cfg)
    log = [json.loads(line) for line in (final.parent.parent / "metrics.jsonl").read_text().splitlines()]
    lrs = [row["lr"] for row in log]  # warm-up to 1e-3, then held or decayed
    assert lrs[1] == pytest.approx(1e-3) and (lrs[-1] == pytest.approx(1e-3)) == (schedule == "constant_with_warmup")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((final.parent.parent / "logs").rglob("events.out.tfevents*")).parent))
    events.Reload()
    assert "samples" in events.Tags()["images"]


def test_tracking_can_be_turned_off(tiny_cfg):
    final = train(tiny_cfg("train.report_to=none"))
    assert not (final.parent.parent / "logs").exists()
