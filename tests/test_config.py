from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genkit.cli import train_main
from genkit.config import Config, ConfigError, all_keys, load_config, to_dict
from tests.conftest import assert_ran_or_one_line, call, override_keys, override_values

ROOT = Path(__file__).resolve().parent.parent


def error_of(*overrides, path=None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, list(overrides))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_are_valid_and_round_trip(tmp_path):
    cfg = load_config()
    assert isinstance(cfg, Config)
    file = tmp_path / "c.yaml"
    import yaml
    file.write_text(yaml.safe_dump(to_dict(cfg)))
    assert load_config(file) == cfg


@pytest.mark.parametrize("recipe", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_loads(recipe):
    load_config(recipe)


def test_required_override_keys_exist():
    keys = set(all_keys())
    for key in ["output_dir", "train.max_steps", "train.batch_size", "train.lr", "train.seed", "data.path",
                "train.checkpoint_every", "train.sample_every", "train.resume"]:
        assert key in keys


def test_overrides_are_typed():
    cfg = load_config(None, ["train.max_steps=200", "train.lr=3e-4", "output_dir=runs/x", "data.hflip=true",
                             "model.unet.channel_mult=[1,2]", "train.resume=latest"])
    assert cfg.train.max_steps == 200 and cfg.train.lr == 3e-4 and cfg.output_dir == "runs/x"
    assert cfg.data.hflip is True and cfg.model.unet.channel_mult == (1, 2) and cfg.train.resume == "latest"


def test_unknown_key_suggests_the_closest():
    assert "did you mean 'train.max_steps'" in error_of("train.max_step=3")
    assert "did you mean 'train.lr'" in error_of("trian.lr=0.1")


@pytest.mark.parametrize("override, needle", [
    ("train.max_steps=abc", "train.max_steps: expected an integer"),
    ("train.lr=fast", "train.lr: expected a number"),
    ("data.hflip=3", "data.hflip: expected true or false"),
    ("train.lr=-0.1", "train.lr: must be positive"),
    ("train.batch_size=0", "train.batch_size: must be positive"),
    ("model.name=gan", "model.name: unknown net 'gan'; choose from unet, dit"),
    ("train.ema_decay=1.5", "train.ema_decay: must lie in [0, 1)"),
    ("train.adam_betas=[0.9,1]", "train.adam_betas: give two numbers in [0, 1)"),
    ("train.adam_betas=[0.99]", "train.adam_betas: give two numbers in [0, 1)"),
    ("train.seed=-1", "train.seed: must lie in 0..2**32-1"),  # regression: numpy's seeding raised mid-setup
    (f"train.seed={2**32}", "train.seed: must lie in 0..2**32-1"),
    ("train.lr=.nan", "train.lr: expected a finite number"),
    ("train", "not of the form key=value"),
    ("train.lr.x=1", "train.lr: expected a number"),
])
def test_bad_values_name_the_key(override, needle):
    assert needle in error_of(override)


def test_geometry_constraints():
    assert "does not divide data.image_size" in error_of("model.name=dit", "model.dit.patch_size=5")
    assert "does not divide model.dit.hidden_size" in error_of("model.name=dit", "model.dit.num_heads=5")
    assert "30 is not divisible by 4 (model.unet.patch_size 1 x 2**2" in error_of("data.image_size=30")
    assert "32 is not divisible by 12" in error_of("model.unet.patch_size=3")
    assert "must be positive" in error_of("model.unet.patch_size=0")
    assert "one count or one per level" in error_of("model.unet.num_res_blocks=[1,2]")
    assert "needs entries in 1..1000" in error_of("model.unet.num_res_blocks=[1,0,2]")


def test_bad_files(tmp_path):
    assert "not found" in error_of(path=tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    assert "must hold a mapping" in error_of(path=tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("train: {max_steps: [\n")
    assert "not valid YAML" in error_of(path=tmp_path / "bad.yaml")
    (tmp_path / "typo.yaml").write_text("train:\n  batchsize: 3\n")
    assert "did you mean 'train.batch_size'" in error_of(path=tmp_path / "typo.yaml")


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(override_keys, override_values), max_size=4))
def test_random_overrides_load_or_fail_with_one_line(pairs):
    overrides = [f"{k}={v}" for k, v in pairs]
    try:
        cfg = load_config(None, overrides)
    except ConfigError as err:
        assert str(err) and "\n" not in str(err)
    else:
        assert isinstance(cfg, Config)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(override_keys, override_values), max_size=4))
def test_train_cli_with_random_overrides_runs_or_fails_in_one_line(pairs):
    code, stderr = call(train_main, ["--print-config", *[f"{k}={v}" for k, v in pairs]])
    assert_ran_or_one_line(code, stderr)


@pytest.mark.parametrize("separator", ["\x1e", "\x85", "\u2028"])
def test_an_unknown_argument_holding_a_line_separator_is_reported_on_one_line(separator):
    """Regression (found by the fuzz above): argparse echoed an unknown argument as given, and
    str.splitlines() also breaks lines at the record separator, NEL and U+2028."""
    code, stderr = call(train_main, [f"-{separator}=0"])
    escaped = separator.encode("unicode_escape").decode()
    assert code == 2 and stderr.splitlines() == [f"error: unrecognized arguments: -{escaped}=0 (see train.py --help)"]


def test_the_sampler_and_its_options_are_checked_when_the_config_loads():
    """Regression: `sample.sampler=dpmpp2m` used to train until the first sample grid, then die."""
    assert "sample.sampler: unknown sampler 'dpmpp2m'; choose from fitted, ddpm, ddim" in error_of("sample.sampler=dpmpp2m")
    assert "sample.options.snr: not an option of ddim" in error_of("sample.sampler=ddim", "sample.options={snr: 1}")
    assert "sample.options.eta: expected a float" in error_of("sample.sampler=ddim", "sample.options={eta: x}")
    assert load_config(None, ["sample.sampler=pc", "sample.options={snr: 0.1, n_corrector: 2}"]).sample.options == \
        {"snr": 0.1, "n_corrector": 2}
    assert load_config(None, []).sample.sampler == "fitted"  # the default: its grid fitted once per model
    assert "sample.options: fitted chooses its sampler's options" in error_of("sample.options={order: 3}")


def test_a_saved_config_holds_only_the_sections_of_its_net_and_method():
    saved = to_dict(load_config(ROOT / "configs" / "rf_unet_mnist.yaml"))
    assert set(saved["model"]) == {"name", "num_classes", "interval", "unet"}
    assert set(saved["method"]) == {"name", "prediction", "p_uncond", "flow"}


def test_configs_saved_before_ddpm_keys_nested_still_load(tmp_path):
    (tmp_path / "old.yaml").write_text("method:\n  name: ddpm\n  num_timesteps: 500\n  beta_schedule: cosine\n")
    cfg = load_config(tmp_path / "old.yaml", ["method.zero_terminal_snr=true", "method.prediction=v"])
    assert (cfg.method.ddpm.num_timesteps, cfg.method.ddpm.beta_schedule, cfg.method.ddpm.zero_terminal_snr) == \
        (500, "cosine", True)
