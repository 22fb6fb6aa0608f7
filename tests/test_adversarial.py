"""Never lose a run: a careless or hostile user corrupts, truncates, kills, interrupts, races and
feeds bad input, and nothing published is lost or left incomplete, no traceback is printed, bad
input exits with status 2, and the message names what to fix."""
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file

import genkit
from genkit import checkpoint as ckpt
from genkit.cli import eval_main, main, sample_main, train_main
from genkit.config import load_config
from genkit.training import train
from tests.conftest import ROOT, assert_ran_or_one_line, call, digit_overrides, tiny_overrides

EXPORT = ("net.safetensors", "net_ema.safetensors", "trainer_state.json", "config.yaml")
STATE = ("model.safetensors", "optimizer.bin", "random_states_0.pkl", "custom_checkpoint_0.pkl",
         "custom_checkpoint_1.pkl")  # accelerate's: the net, AdamW, the RNGs, the LR scheduler and the EMA
DAMAGE = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: max(1, p.stat().st_size // 2)]),
    "random bytes": lambda p: p.write_bytes(np.random.default_rng(0).bytes(max(64, p.stat().st_size))),
    "empty": lambda p: p.write_bytes(b""),
    "deleted": lambda p: p.unlink(),
}
# every file with one kind of damage by default; the other kinds in the slow run (CI runs both)
DAMAGE_KINDS = [pytest.param(kind, marks=() if kind == "truncated" else pytest.mark.slow) for kind in DAMAGE]


@pytest.fixture(scope="module")
def two_checkpoints(digits, tmp_path_factory):
    """A tiny run on real digits with checkpoints at steps 2 and 4."""
    out = tmp_path_factory.mktemp("adversarial") / "run"
    train(load_config(None, digit_overrides(digits, out)))
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["step-000002", "step-000004"]
    return out


def copy_run(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


# ------------------------------------------------------------------ damaged checkpoints


@pytest.mark.parametrize("damage", DAMAGE_KINDS)
@pytest.mark.parametrize("name", EXPORT + STATE)
def test_resume_latest_skips_a_damaged_newest_checkpoint(two_checkpoints, tmp_path, digits, name, damage,
                                                         caplog):
    run = copy_run(two_checkpoints, tmp_path)
    DAMAGE[damage](run / "checkpoints" / "step-000004" / name)
    code, stderr = call(train_main, digit_overrides(digits, run) + ["train.resume=latest", "train.max_steps=6"])
    assert code == 0, stderr[-2000:]
    assert "step-000004" in caplog.text and "skipping" in caplog.text  # one warning names what was skipped
    final = ckpt.list_checkpoints(run)[-1]
    assert final.name == "step-000006" and ckpt.damage(final) is None


@pytest.mark.parametrize("damage", DAMAGE_KINDS)
@pytest.mark.parametrize("name", EXPORT + STATE)
def test_sampling_a_run_uses_its_newest_intact_checkpoint(two_checkpoints, tmp_path, name, damage):
    run = copy_run(two_checkpoints, tmp_path)
    DAMAGE[damage](run / "checkpoints" / "step-000004" / name)
    model = genkit.load(run)
    expected = "step-000002" if name in EXPORT else "step-000004"  # sampling needs only the export
    assert model.directory.name == expected
    code, stderr = call(sample_main, ["--checkpoint", str(run), "--num", "2", "--steps", "2",
                                      "--out", str(tmp_path / "grid.png")])
    assert code == 0, stderr


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("name", EXPORT)
def test_a_damaged_checkpoint_named_directly_fails_in_one_line(two_checkpoints, tmp_path, name, damage):
    run = copy_run(two_checkpoints, tmp_path)
    step = run / "checkpoints" / "step-000004"
    DAMAGE[damage](step / name)
    code, stderr = call(sample_main, ["--checkpoint", str(step), "--num", "2", "--out", str(tmp_path / "x.png")])
    assert_ran_or_one_line(code, stderr)
    assert code == 2 and "--checkpoint" in stderr and "damaged" in stderr


def test_every_checkpoint_damaged_is_refused_not_restarted(two_checkpoints, tmp_path, digits):
    run = copy_run(two_checkpoints, tmp_path)
    for step in ckpt.list_checkpoints(run):
        (step / "net.safetensors").write_bytes(b"junk")
    code, stderr = call(train_main, digit_overrides(digits, run) + ["train.resume=latest"])
    assert code == 2 and "every checkpoint" in stderr and "damaged" in stderr


# ------------------------------------------------------------------ crashes while publishing


@pytest.mark.parametrize("crash_at", range(6))
@pytest.mark.parametrize("resave", [False, True])
def test_a_crash_anywhere_in_publish_loses_no_step(two_checkpoints, tmp_path, monkeypatch, crash_at, resave):
    """Kill `publish` at its k-th rename (re-saving step 4, or adding step 6 and pruning step 2):
    after `recover`, every step-* is complete and the newest step is still there."""
    run = copy_run(two_checkpoints, tmp_path)
    root = run / "checkpoints"
    final = root / ("step-000004" if resave else "step-000006")
    tmp = root / f".tmp-{final.name}"
    shutil.copytree(root / "step-000004", tmp)
    renames = {"n": 0}
    real_rename = Path.rename

    def rename(self, target):
        renames["n"] += 1
        if renames["n"] > crash_at:
            raise KeyboardInterrupt("killed")
        return real_rename(self, target)
    monkeypatch.setattr(Path, "rename", rename)
    try:
        ckpt.publish(tmp, final, keep=2)
    except KeyboardInterrupt:
        pass
    monkeypatch.setattr(Path, "rename", real_rename)
    ckpt.recover(run)
    steps = ckpt.list_checkpoints(run)
    assert all(ckpt.damage(p) is None for p in steps)
    assert root / "step-000004" in steps  # the newest published step never disappears
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # nothing half-done is left


# ------------------------------------------------------------------ the run directory


def test_an_existing_run_is_not_overwritten_without_being_asked(two_checkpoints, tmp_path, imagefolder):
    run = copy_run(two_checkpoints, tmp_path)
    before = {p.name: ckpt.read_trainer_state(p) for p in ckpt.list_checkpoints(run)}
    code, stderr = call(train_main, tiny_overrides(imagefolder, run) + ["train.max_steps=2"])
    assert code == 2 and "already holds a run" in stderr and "train.resume=latest" in stderr
    assert {p.name: ckpt.read_trainer_state(p) for p in ckpt.list_checkpoints(run)} == before
    code, stderr = call(train_main, tiny_overrides(imagefolder, run) + ["train.max_steps=1", "train.overwrite=true"])
    assert code == 0, stderr
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step-000001"]  # the reported final checkpoint exists
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_a_second_run_into_the_same_directory_is_refused_and_a_stale_lock_taken_over(imagefolder, tmp_path):
    out = tmp_path / "run"
    args = tiny_overrides(imagefolder, out) + ["train.max_steps=100000", "train.checkpoint_every=0"]
    first = subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        code, stderr = call(train_main, tiny_overrides(imagefolder, out) + ["train.resume=latest"])
        assert code == 2 and "in use by another run" in stderr
    finally:
        first.kill()
        first.wait()
    assert (out / ".lock").exists()  # SIGKILL leaves the lock of a dead process: stale, taken over
    code, stderr = call(train_main, tiny_overrides(imagefolder, out) + ["train.resume=latest", "train.max_steps=2"])
    assert code == 0, stderr
    assert not (out / ".lock").exists()


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_and_sigterm_save_the_current_step_and_say_how_to_resume(imagefolder, tmp_path, signum, status):
    out = tmp_path / "run"
    args = tiny_overrides(imagefolder, out) + ["train.max_steps=100000", "train.checkpoint_every=0"]
    proc = subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == status, stderr[-2000:]
    assert "Traceback" not in stderr and "train.resume=latest" in stderr
    saved = ckpt.list_checkpoints(out)
    assert len(saved) == 1 and ckpt.damage(saved[0]) is None and ckpt.read_trainer_state(saved[0])["step"] >= 1
    assert not (out / ".lock").exists()


def test_a_learning_rate_that_breaks_the_weights_never_publishes_them(imagefolder, tmp_path):
    out = tmp_path / "run"
    code, stderr = call(train_main, tiny_overrides(imagefolder, out) + [
        "train.lr=1e308", "train.warmup_steps=0", "train.max_bad_steps=3", "train.checkpoint_every=1",
        "train.max_steps=20"])
    assert code == 1 and "non-finite" in stderr
    for step in ckpt.list_checkpoints(out):
        assert all(torch.isfinite(t).all() for t in load_file(str(step / "net.safetensors")).values())
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(row["loss"] is None or row["loss"] > 0 for row in log)  # no step applied: no loss of 0


def test_resume_refuses_a_changed_trajectory_unless_allowed_and_records_the_truth(two_checkpoints, tmp_path,
                                                                                  digits):
    run = copy_run(two_checkpoints, tmp_path)
    base = digit_overrides(digits, run) + ["train.resume=latest", "train.max_steps=6"]
    code, stderr = call(train_main, base + ["train.lr=0.5", "train.batch_size=4"])
    assert code == 2 and "train.lr: 0.001 -> 0.5" in stderr and "train.batch_size: 8 -> 4" in stderr
    code, stderr = call(train_main, base + ["train.lr=0.5", "train.allow_config_changes=true"])
    assert code == 0, stderr
    final = ckpt.list_checkpoints(run)[-1]
    assert load_config(final / "config.yaml").train.lr == 0.5
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert log[-2]["step"] == 5 and 0.001 < log[-2]["lr"] <= 0.5  # the new rate is the one used (cosine: 0 at the end)


# ------------------------------------------------------------------ bad data


def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


@pytest.fixture
def folder(imagefolder, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(imagefolder, copy)
    return copy


@pytest.mark.parametrize("junk, needle", [
    (lambda p: p.write_bytes(p.read_bytes()[:60]), "cannot be decoded"),
    (lambda p: p.write_text("not an image"), "cannot be decoded"),
])
def test_an_undecodable_image_is_named(folder, tmp_path, junk, needle):
    bad = sorted((folder / "train" / "1").iterdir())[0]
    junk(bad)
    code, stderr = call(train_main, tiny_overrides(folder, tmp_path / "run"))
    assert code == 2 and needle in stderr and bad.name in stderr, stderr


def test_sixteen_bit_images_keep_their_grey_levels(folder):
    from genkit.config import DataConfig
    from genkit.data import load_images

    levels = np.linspace(0, 65535, 16 * 16).reshape(16, 16).astype(np.uint16)
    for path in (folder / "train").rglob("*.png"):
        Image.fromarray(levels).save(path)
    images = load_images(DataConfig(path=str(folder), image_size=16, fit="resize"), progress=False).images
    expected = torch.from_numpy(np.round(levels / 257).astype(np.uint8))
    assert torch.equal(images[0, 0], expected)  # not clipped to white


@pytest.mark.parametrize("extra, needle", [
    (["data.label_column=lable"], "data.label_column: "),
    (["model.num_classes=2"], "labels must lie in 0..1"),
    (["model.num_classes=3"], "labels must lie in 0..2"),
])
def test_labels_a_conditional_model_cannot_use_are_refused(imagefolder, tmp_path, extra, needle):
    code, stderr = call(train_main, tiny_overrides(imagefolder, tmp_path / "run") + extra)
    assert code == 2 and needle in stderr, stderr


def test_output_dir_that_is_a_file_and_a_binary_config_fail_in_one_line(imagefolder, tmp_path):
    (tmp_path / "file").write_text("x")
    code, stderr = call(train_main, tiny_overrides(imagefolder, tmp_path / "file"))
    assert code == 2 and "is a file" in stderr
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)))
    code, stderr = call(train_main, ["--config", str(tmp_path / "binary.yaml")])
    assert_ran_or_one_line(code, stderr)
    assert code == 2


# ------------------------------------------------------------------ what sample and eval write


def test_grids_are_written_in_the_format_named_and_never_over_a_checkpoint(two_checkpoints, tmp_path):
    args = ["--checkpoint", str(two_checkpoints), "--num", "2", "--steps", "2"]
    assert call(sample_main, args + ["--out", str(tmp_path / "g.jpg")])[0] == 0
    assert (tmp_path / "g.jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG, not PNG bytes under a .jpg name
    code, stderr = call(sample_main, args + ["--out", str(tmp_path / "g.txt")])
    assert code == 2 and "--checkpoint" not in stderr and "name a .png file" in stderr
    target = ckpt.list_checkpoints(two_checkpoints)[-1] / "grid.png"
    code, stderr = call(sample_main, args + ["--out", str(target)])
    assert code == 2 and "is a checkpoint" in stderr and not target.exists()


def test_a_grid_write_that_dies_leaves_the_old_file(two_checkpoints, tmp_path, monkeypatch):
    out = tmp_path / "grid.png"
    out.write_bytes(b"the old grid")

    def dies(self, fp, format=None, **params):
        Path(fp).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt("killed")
    monkeypatch.setattr(Image.Image, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        call(sample_main, ["--checkpoint", str(two_checkpoints), "--num", "2", "--steps", "2", "--out", str(out)])
    assert out.read_bytes() == b"the old grid" and [p.name for p in tmp_path.iterdir()] == ["grid.png"]


def test_eval_refuses_too_few_samples_before_sampling_and_writes_strict_json(two_checkpoints, tmp_path):
    code, stderr = call(eval_main, ["--checkpoint", str(two_checkpoints), "--num", "3"])
    assert code == 2 and "--num: evaluation needs at least 5" in stderr
    out = tmp_path / "eval.json"
    code, stderr = call(eval_main, ["--checkpoint", str(two_checkpoints), "--num", "5", "--steps", "2",
                                    "--json", str(out)])
    assert code == 0, stderr
    json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))


# ------------------------------------------------------------------ random command lines at every CLI

FLAG_VALUES = st.sampled_from(["0", "-1", "2", "1e-4", "nan", "inf", "", "abc", "/no/such", "x.png",
                               "99999999999999999999"])
COMMANDS = {  # every flag of each command that costs seconds, not hours, at any value above
    "sample": ["--steps", "--num", "--seed", "--batch-size", "--guidance", "--class-label", "--sampler",
               "--schedule", "--nrow", "--option", "--out"],
    "eval": ["--steps", "--seed", "--guidance", "--bpd-tol", "--sampler", "--class-label", "--json"],
    "reflow": ["--num", "--steps", "--sampler", "--seed", "--batch-size", "--out"],
    "plot-loss": ["--out"],
}
DEFAULTS = {"sample": ["--num", "2", "--steps", "1"], "eval": ["--num", "5", "--steps", "1"],
            "reflow": ["--num", "2", "--steps", "1"], "plot-loss": []}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(list(COMMANDS)), data=st.data())
def test_every_cli_with_random_flags_runs_or_fails_in_one_line(two_checkpoints, tmp_path, command, data):
    flags = data.draw(st.lists(st.tuples(st.sampled_from(COMMANDS[command]), FLAG_VALUES), max_size=3))
    where = [str(two_checkpoints)] if command == "plot-loss" else ["--checkpoint", str(two_checkpoints)]
    outputs = {"sample": ["--out", str(tmp_path / "o.png")], "eval": ["--json", str(tmp_path / "o.json")],
               "reflow": ["--out", str(tmp_path / "pairs")], "plot-loss": ["--out", str(tmp_path / "loss.png")]}
    argv = [command, *where, *DEFAULTS[command], *outputs[command]]
    for flag, value in flags:
        relative = flag in ("--out", "--json") and value and not value.startswith("/")
        argv += [flag, str(tmp_path / value) if relative else value]
    code, stderr = call(main, argv)
    assert_ran_or_one_line(code, stderr)


# ------------------------------------------------------------------ values that were accepted and then went wrong


@pytest.mark.parametrize("argv, needle", [
    (["--sampler", "pc", "--option", "n_corrector=-5"], "--option n_corrector: must be a finite number >= 0"),
    (["--sampler", "ode", "--option", "method=magic"], "--option method: unknown ODE solver 'magic'"),
    (["--sampler", "ode", "--option", "rtol=0"], "--option rtol: must lie in (0, 1)"),
    (["--sampler", "ddim", "--option", "eta=-1"], "--option eta: must be a finite number >= 0"),
    (["--sampler", "unipc", "--option", "first_step=both"], "--option first_step: must be one of end, mean"),
    (["--sampler", "fitted", "--option", "order=3"], "--option order: fitted chooses its sampler's options"),
    (["--sampler", "ddim", "--option", "eta={"], "--option eta: expected a float"),  # regression: a YAML traceback
    (["--sampler", "ode", "--option", "method=[rk4"], "--option method: unknown ODE solver '[rk4'"),
    (["--seed", str(2**64 + 1)], "--seed: must lie in 0..2**63-1"),
    (["--steps", str(10**9)], "--steps: must lie in 1..100000"),
    (["--num", str(10**12)], "--num: at most"),
    (["--nrow", "50"], "--nrow: must lie in 1..--num"),
])
def test_sampling_values_that_cannot_work_are_refused_before_sampling(two_checkpoints, tmp_path, argv, needle):
    code, stderr = call(sample_main, ["--checkpoint", str(two_checkpoints), "--num", "2", "--steps", "2",
                                      "--out", str(tmp_path / "g.png"), *argv])
    assert code == 2 and needle in stderr, stderr
    assert not (tmp_path / "g.png").exists()


def test_guidance_of_an_unconditional_model_is_refused(imagefolder, tmp_path):
    run = train(load_config(None, tiny_overrides(imagefolder, tmp_path / "run") + ["model.num_classes=0",
                                                                                  "train.max_steps=1"]))
    code, stderr = call(sample_main, ["--checkpoint", str(run), "--num", "2", "--steps", "2", "--guidance", "3",
                                      "--out", str(tmp_path / "g.png")])
    assert code == 2 and "--guidance: this model is unconditional" in stderr


@pytest.mark.parametrize("extra, needle", [
    (["data.image_size=100000"], "data.image_size: at most 4096"),
    (["data.channels=2"], "data.channels: 2 is not one of 1, 3"),
    (["data.path=data/mnst"], "data.path: data/mnst does not exist (did you mean"),
])
def test_configs_that_would_reach_the_allocator_or_the_hub_are_refused(tmp_path, extra, needle):
    code, stderr = call(train_main, [f"output_dir={tmp_path / 'run'}", *extra])
    assert code == 2 and needle in stderr, stderr


def test_a_full_disk_leaves_no_partial_checkpoint_and_keeps_the_published_ones(two_checkpoints, tmp_path,
                                                                              digits, monkeypatch):
    run = copy_run(two_checkpoints, tmp_path)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(ckpt, "save_file", full)
    code, stderr = call(train_main, digit_overrides(digits, run) + ["train.resume=latest", "train.max_steps=6"])
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in stderr and len(errors) == 1
    assert code == 1 and "No space left on device" in stderr and "train.resume=latest" in stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000002", "step-000004"]
    assert all(ckpt.damage(p) is None for p in ckpt.list_checkpoints(run))


@pytest.mark.parametrize("command", ["sample", "plot-loss"])
def test_an_output_path_that_cannot_be_written_fails_in_one_line(two_checkpoints, command):
    where = [str(two_checkpoints)] if command == "plot-loss" else ["--checkpoint", str(two_checkpoints), "--num", "2",
                                                                   "--steps", "1"]
    code, stderr = call(main, [command, *where, "--out", "/dev/null/grid.png"])
    assert_ran_or_one_line(code, stderr)
    assert code == 2 and "/dev/null" in stderr


def test_a_damaged_reflow_shard_is_named(two_checkpoints, tmp_path, imagefolder):
    from genkit.reflow import generate_pairs

    flow = train(load_config(None, tiny_overrides(imagefolder, tmp_path / "flow") + ["method.name=flow",
                                                                                    "train.max_steps=1"]))
    pairs = generate_pairs(genkit.load(flow), tmp_path / "pairs", num=4, steps=1, shard_size=2, progress=False)
    (pairs / "pairs-00001.safetensors").write_bytes(b"junk")
    code, stderr = call(train_main, tiny_overrides(imagefolder, tmp_path / "rf2") + [
        "method.name=flow", f"data.path={pairs}", "train.batch_size=4"])
    assert code == 2 and "pairs-00001.safetensors does not load" in stderr


@pytest.mark.parametrize("width", [2**25, 2**32])  # 2**32: a size torch cannot even count (regression: a traceback)
def test_a_net_too_large_for_memory_fails_in_one_line(imagefolder, tmp_path, width):
    code, stderr = call(train_main, tiny_overrides(imagefolder, tmp_path / "run") + [f"model.unet.channels={width}"])
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert code == 1 and len(errors) == 1 and "out of memory" in errors[0] and "Traceback" not in stderr
    assert not (tmp_path / "run" / ".lock").exists()  # the failed run let go of its directory


def test_a_checkpoint_written_before_a_config_key_was_added_still_loads(two_checkpoints, tmp_path):
    """Regression: a completeness check on the config's keys called every older checkpoint damaged."""
    run = copy_run(two_checkpoints, tmp_path)
    step = ckpt.list_checkpoints(run)[-1]
    config = (step / "config.yaml").read_text().replace("  report_to: tensorboard\n", "")  # a key of a later version
    (step / "config.yaml").write_text(config)
    state = json.loads((step / "trainer_state.json").read_text())
    del state["config_sha256"]  # nor did older versions write a checksum
    (step / "trainer_state.json").write_text(json.dumps(state))
    assert ckpt.damage(step) is None and genkit.load(run).directory == step
