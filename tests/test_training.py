import shutil

import torch
from safetensors.torch import load_file

import genkit
from genkit.checkpoint import list_checkpoints, read_trainer_state, resolve_checkpoint
from genkit.training import Trainer, train


def test_few_steps_write_checkpoints_export_and_logs(tiny_cfg):
    cfg = tiny_cfg("train.sample_every=2")
    final = train(cfg)
    out = final.parent.parent.parent
    assert [p.name for p in list_checkpoints(out)] == ["step-000002", "step-000004"]
    for name in ["config.yaml", "net.safetensors", "net_ema.safetensors", "trainer_state.json"]:
        assert (final / name).is_file()
    assert read_trainer_state(final)["step"] == 4
    assert list((out / "logs").rglob("events.out.tfevents*"))
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step-000002.png", "step-000004.png"]
    ema, raw = load_file(str(final / "net_ema.safetensors")), load_file(str(final / "net.safetensors"))
    assert ema.keys() == raw.keys() and any(not torch.equal(ema[k], raw[k]) for k in ema)
    model = genkit.load(out)
    assert model.sample(2, steps=2, progress=False).shape == (2, 1, 16, 16)


def test_resume_latest_reaches_identical_weights(tiny_cfg):
    cfg = tiny_cfg("model.unet.dropout=0.1")  # dropout draws from the global RNG, which is restored too
    final = train(cfg)
    uninterrupted = load_file(str(final / "net.safetensors"))
    shutil.rmtree(final)  # as if the run had died between step 2 and step 4
    resumed_cfg = tiny_cfg("model.unet.dropout=0.1", "train.resume=latest")
    trainer = Trainer(resumed_cfg)
    assert trainer.resume_from.name == "step-000002"
    resumed = trainer.fit()
    assert read_trainer_state(resumed)["step"] == 4
    again = load_file(str(resumed / "net.safetensors"))
    assert all(torch.equal(uninterrupted[k], again[k]) for k in uninterrupted)


def test_checkpoint_limit_and_resolution(tiny_cfg):
    final = train(tiny_cfg("train.max_steps=6", "train.checkpoint_every=1", "train.checkpoints_keep=2"))
    out = final.parent.parent.parent
    assert [p.name for p in list_checkpoints(out)] == ["step-000005", "step-000006"]
    assert resolve_checkpoint(out) == final and resolve_checkpoint(final) == final


def test_bf16_and_gradient_accumulation_train(tiny_cfg):
    final = train(tiny_cfg("train.mixed_precision=bf16", "train.grad_accum=2", "train.max_steps=2"))
    assert read_trainer_state(final) == {"step": 2, "bad_steps_total": 0}
