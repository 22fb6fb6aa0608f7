"""The scripts as a user runs them: exit codes, one-line errors, PNG output."""
import contextlib
import io

import pytest
from PIL import Image

from genkit.cli import main, sample_main, train_main
from tests.conftest import call, call_out, digit_overrides, tiny_overrides
from tests.conftest import run_script as run

ENTRY = {"train.py": train_main, "sample.py": sample_main}


@pytest.fixture(scope="module")
def trained_run(digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    result = run("train.py", *digit_overrides(digits, out), "train.max_steps=2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "done: final checkpoint" in result.stdout
    return out


def test_the_default_grid_is_fitted_once_and_read_by_sample(imagefolder, tmp_path, small_pilot):
    """Training ends by fitting the default sampler's grid at the run's steps into the final checkpoint;
    `sample` reads it (no pilot, no note); `genkit fit-grid` adds other step counts; a step count with
    none stored samples on the fixed grid and says in one line how to fit one. In-process, through
    the commands' entry points."""
    run_dir = tmp_path / "run"
    code, stderr = call(train_main, tiny_overrides(imagefolder, run_dir) + ["train.max_steps=2", "sample.fit_grid=true"])
    assert code == 0, stderr
    final = sorted((run_dir / "checkpoints").glob("step-*"))[-1]
    assert (final / "grids.json").is_file()
    sample = ["--checkpoint", str(run_dir), "--num", "4", "--out"]
    code, stderr = call(sample_main, sample + [str(tmp_path / "a.png")])
    assert code == 0 and "note:" not in stderr, stderr
    code, stderr = call(sample_main, sample + [str(tmp_path / "b.png"), "--steps", "2"])
    notes = [line for line in stderr.splitlines() if line.startswith("note:")]
    assert code == 0 and len(notes) == 1 and "genkit fit-grid RUN --steps 2" in notes[0], stderr
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["fit-grid", str(run_dir), "--steps", "2"]) == 0
    assert "fitted at 2 steps" in out.getvalue() and str(final) in out.getvalue()
    code, stderr = call(sample_main, sample + [str(tmp_path / "c.png"), "--steps", "2"])
    assert code == 0 and "note:" not in stderr, stderr
    assert (tmp_path / "b.png").read_bytes() != (tmp_path / "c.png").read_bytes()


@pytest.mark.slow  # the default set keeps under 6 minutes on CI's 2 cores (#36)
def test_sample_cli_writes_grid_and_is_deterministic(trained_run, tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    for out in (a, b):
        result = run("sample.py", "--checkpoint", str(trained_run), "--out", str(out), "--num", "6",
                     "--seed", "0", "--steps", "2", "--sampler", "ddpm")
        assert result.returncode == 0, result.stderr[-2000:]
    assert Image.open(a).size == (3 * 34 + 2, 2 * 34 + 2)  # 3 per row, 32 px + 2 px padding
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("args, needle", [
    (["train.py", "train.max_step=3"], "did you mean 'train.max_steps'"),
    (["train.py", "--config", "configs/nope.yaml"], "config file not found"),
    (["train.py", "data.path=/no/such/dir", "train.max_steps=1"], "data.path"),
    (["sample.py", "--checkpoint", "/no/such/run"], "does not exist"),
    (["sample.py", "--checkpoint", ".", "--steps", "0"], "--steps: must lie in 1.."),
    (["sample.py", "--checkpoint", ".", "--sampler", "magic"], "invalid choice"),
    (["sample.py", "--checkpoint", ".", "--guidance-interval", "3", "1"], "--guidance-interval: needs 0 <= lo < hi"),
    (["sample.py", "--checkpoint", "."], "neither a checkpoint nor a run directory"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle):
    """In-process, through the scripts' entry points (`tests/test_packaging.py` runs the scripts themselves)."""
    code, stderr = call(ENTRY[args[0]], args[1:])
    assert code == 2
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], stderr


def test_help_lists_samplers_and_overrides():
    def help_of(main) -> str:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            main(["--help"])
        return out.getvalue()
    sample_help = help_of(sample_main)
    assert "ddim" in sample_help and "ddpm" in sample_help and "fit-grid" in sample_help
    assert "train.max_steps=200" in help_of(train_main)


def test_print_config_shows_resolved_values():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert train_main(["--config", "configs/ddpm_unet_mnist.yaml", "--print-config", "train.lr=3e-4"]) == 0
    assert "lr: 0.0003" in out.getvalue()


@pytest.mark.parametrize("method, samplers", [
    pytest.param(["method.name=sde", "method.sde.kind=subvp"], ["em", "pc", "ode"], marks=pytest.mark.slow),
    pytest.param(["method.name=sde", "method.sde.kind=ve"], ["pc", "dpmpp_2m_pc"], marks=pytest.mark.slow),
    pytest.param(["method.name=flow", "method.flow.time_density=mode", "method.flow.shift=2"], ["euler", "heun", "ode"],
                 marks=pytest.mark.slow),
])
def test_sde_and_flow_runs_train_and_sample_from_the_cli(imagefolder, tmp_path, method, samplers):
    out = tmp_path / "run"
    result = run("train.py", *tiny_overrides(imagefolder, out), "train.max_steps=2", *method)
    assert result.returncode == 0, result.stderr[-2000:]
    for sampler in samplers:
        png = tmp_path / f"{sampler}.png"
        result = run("sample.py", "--checkpoint", str(out), "--out", str(png), "--num", "4", "--steps", "3",
                     "--sampler", sampler, *(["--option", "snr=0.05", "--option", "n_corrector=2"] if sampler == "pc" else []))
        assert result.returncode == 0 and png.is_file(), result.stderr[-2000:]


@pytest.mark.slow  # the default set keeps under 6 minutes on CI's 2 cores (#36)
def test_eval_bits_per_dim_and_bad_options(trained_run, tmp_path):
    out = tmp_path / "eval.json"
    result = run("eval.py", "--checkpoint", str(trained_run), "--num", "8", "--steps", "2", "--bpd", "2",
                 "--bpd-tol", "1e-3", "--json", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "bits_per_dim" in result.stdout and '"nfe_per_batch"' in out.read_text()
    result = run("sample.py", "--checkpoint", str(trained_run), "--sampler", "ddim", "--option", "snr=1")
    assert result.returncode == 2 and "--option snr: not an option of ddim" in result.stderr


@pytest.mark.parametrize("recipe, net", [  # full MNIST and the default sampler's pilot: about a minute each
    pytest.param("ddpm_unet_mnist", "unet with 1.65M", marks=pytest.mark.slow),
    pytest.param("ddpm_dit_mnist", "dit with 7.38M", marks=pytest.mark.slow)])
def test_unet_and_dit_recipes_train_and_sample_a_class_from_the_cli(recipe, net, tmp_path):
    result = run("train.py", "--config", f"configs/{recipe}.yaml", "train.max_steps=2", "train.batch_size=8",
                 "train.sample_every=0", f"output_dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert net in result.stdout + result.stderr  # the recipe's own net, at its own size
    png = tmp_path / "threes.png"
    result = run("sample.py", "--checkpoint", str(tmp_path / "run"), "--out", str(png), "--num", "4",
                 "--steps", "2", "--class-label", "3", "--guidance", "2")
    assert result.returncode == 0 and Image.open(png).size == (2 * 34 + 2, 2 * 34 + 2), result.stderr[-2000:]


def test_option_takes_several_pairs_after_one_flag_as_the_readme_writes_them():
    from genkit.cli import sample_parser

    args = sample_parser().parse_args(["--checkpoint", "r", "--option", "method=rk4", "rtol=1e-4", "--option", "atol=1e-4"])
    assert args.option == ["method=rk4", "rtol=1e-4", "atol=1e-4"]


def test_sampler_options_read_numbers_as_users_type_them():
    from genkit.cli import _sampler_options

    options = _sampler_options(["rtol=1e-4", "snr=0.16", "n_corrector=2", "per_sample=false", "method=rk4"])
    assert options == {"rtol": 1e-4, "snr": 0.16, "n_corrector": 2, "per_sample": False, "method": "rk4"}
    assert isinstance(options["rtol"], float) and isinstance(options["n_corrector"], int)


@pytest.mark.slow  # the default set keeps under 6 minutes on CI's 2 cores (#36)
def test_sample_writes_one_png_per_image_and_an_npz_for_external_scorers(trained_run, tmp_path):
    import numpy as np

    code, stdout, stderr = call_out(sample_main, ["--checkpoint", str(trained_run), "--num", "5", "--steps", "2",
                                                  "--outdir", str(tmp_path / "pngs"), "--npz", str(tmp_path / "s.npz")])
    assert code == 0, stderr[-2000:]
    assert "wrote" in stdout and "grid.png" not in stdout  # no grid unless asked for
    names = sorted(p.name for p in (tmp_path / "pngs").iterdir())
    assert names == [f"{i:06d}.png" for i in range(5)]
    arrays = np.load(tmp_path / "s.npz")
    assert arrays["arr_0"].shape == (5, 32, 32, 1) and arrays["arr_0"].dtype == np.uint8
    assert arrays["labels"].tolist() == [0, 1, 2, 3, 4]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "pngs" / "000003.png")), arrays["arr_0"][3, ..., 0])
    code, stderr = call(sample_main, ["--checkpoint", str(trained_run), "--num", "2", "--outdir", str(tmp_path / "pngs")])
    assert code == 2 and "--outdir: " in stderr and "not an empty directory" in stderr
    code, stderr = call(sample_main, ["--checkpoint", str(trained_run), "--num", "2", "--npz", str(tmp_path / "s.npy")])
    assert code == 2 and "--npz: name a .npz file" in stderr
