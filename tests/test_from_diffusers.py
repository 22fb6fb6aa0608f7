"""Diffusers models in genkit (`genkit.from_diffusers`, `genkit.load` on a pipeline folder): tiny
randomly initialised UNet2DModels saved locally; genkit's samplers on the wrapped model against
diffusers' own DDIM and flow-matching loops on diffusers' own tables."""
import json
import math
from types import SimpleNamespace

import pytest
import torch
from diffusers import (DDIMScheduler, DDPMPipeline, DDPMScheduler, DPMSolverMultistepScheduler,
                       FlowMatchEulerDiscreteScheduler, UNet2DModel)

import genkit
from genkit.cli import main
from tests.conftest import call
from genkit.loading import method_from_scheduler
from genkit.registry import ArgumentError
from genkit.samplers import SAMPLERS


def tiny_unet(channels: int = 1, classes: int | None = None, seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(sample_size=8, in_channels=channels, out_channels=channels, block_out_channels=(8, 16),
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4, num_class_embeds=classes)


def save_pipeline(folder, unet, scheduler):
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder)  # keeps the scheduler class as given
    return folder


def diffusers_loop(folder, scheduler_class, x, steps, labels=None, **step):
    """diffusers' pipeline loop, from the saved folder: set_timesteps, then model and step."""
    unet = UNet2DModel.from_pretrained(folder, subfolder="unet")
    scheduler = scheduler_class.from_pretrained(folder, subfolder="scheduler")
    scheduler.set_timesteps(steps)
    x = x * getattr(scheduler, "init_noise_sigma", 1.0)  # flow-matching schedulers have none
    with torch.no_grad():
        for k in scheduler.timesteps:
            out = unet(x, k, class_labels=labels).sample
            x = scheduler.step(out, k, x, **step).prev_sample
    return x


def guided_loop(scheduler, x, guidance, halves):
    """diffusers' classifier-free guidance loop on DDIM (eta 0): `halves(doubled batch, k)` gives the
    conditional and the null halves of the model's output, guided on the predicted noise."""
    with torch.no_grad():
        for k in scheduler.timesteps:
            cond, null = halves(torch.cat([x, x]), k)
            x = scheduler.step(null + guidance * (cond - null), k, x, eta=0.0).prev_sample
    return x


TABLES = {  # diffusers' own tables, each with a scheduler that takes DDIM's step between its own timesteps
    "trailing": (DDIMScheduler, dict(timestep_spacing="trailing", clip_sample=False)),
    "leading": (DDIMScheduler, dict(timestep_spacing="leading", clip_sample=False)),
    "leading, steps_offset=1": (DDIMScheduler, dict(timestep_spacing="leading", steps_offset=1, clip_sample=False)),
    # DDIMScheduler steps to k - T // steps whatever its spacing, which with linspace lands between its own
    # timesteps; DPM-Solver++ of order 1 is DDIM's step between consecutive timesteps
    "linspace": (DPMSolverMultistepScheduler, dict(timestep_spacing="linspace", solver_order=1, final_sigmas_type="zero")),
    # and it floors alpha-bar at zero SNR at 2^-24, as genkit's path and diffusers' Euler do (DDIMScheduler keeps 0)
    "zero-SNR, trailing": (DPMSolverMultistepScheduler, dict(timestep_spacing="trailing", rescale_betas_zero_snr=True,
                                                             solver_order=1, final_sigmas_type="zero")),
}


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_wrapped_unet_through_genkit_ddim_reproduces_diffusers_ddim(tmp_path, table, prediction):
    """`genkit.load` reads a diffusers pipeline folder; genkit's `ddim` on the scheduler's own
    timesteps reproduces diffusers' loop (DDIM's step, eta 0) to 1e-5 of the images' scale (float32
    rounding: a random UNet's eps makes x0 of size 30), on each of diffusers' spacings, with
    steps_offset and with zero terminal SNR."""
    scheduler_class, settings = TABLES[table]
    if prediction == "epsilon" and "zero-SNR" in table:
        pytest.skip("zero terminal SNR needs v prediction (genkit refuses eps there)")
    scheduler = scheduler_class(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                                beta_end=0.012, prediction_type=prediction, **settings)
    folder = save_pipeline(tmp_path / "pipe", tiny_unet(), scheduler)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    step = {"eta": 0.0} if scheduler_class is DDIMScheduler else {}
    theirs = diffusers_loop(folder, scheduler_class, x, 10, **step)
    model = genkit.load(folder)
    assert model.prediction == {"epsilon": "eps", "v_prediction": "v"}[prediction]
    scheduler.set_timesteps(10)
    ts = torch.cat([model.path.timestep_to_t(scheduler.timesteps), torch.zeros(1, dtype=torch.float64)])
    if table != "linspace":  # genkit's own spacings give the same timesteps
        spacing, _, offset = table.partition(", steps_offset=")
        assert torch.equal(ts, model.path.timesteps(10, spacing.split(", ")[-1], int(offset or 0)))
    ours = SAMPLERS["ddim"].build(model.denoiser(), x.clone(), ts)
    assert (ours - theirs).abs().max().item() < 1e-5 * max(1.0, theirs.abs().max().item())


def test_wrapped_flow_through_genkit_euler_reproduces_flow_match_euler(tmp_path):
    """A flow-matching pipeline (FlowMatchEulerDiscreteScheduler, shift 3) becomes a rectified flow
    with SD3's shift; genkit's `euler` on the scheduler's sigmas reproduces diffusers' loop to 1e-5."""
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    folder = save_pipeline(tmp_path / "flow", tiny_unet(3, seed=2), scheduler)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    theirs = diffusers_loop(folder, FlowMatchEulerDiscreteScheduler, x, 8)
    model = genkit.from_diffusers(folder)
    assert model.prediction == "velocity" and model.path.shift == 3.0
    reference = FlowMatchEulerDiscreteScheduler.from_pretrained(folder, subfolder="scheduler")
    reference.set_timesteps(8)
    ts = reference.sigmas.double()  # descending, ending at 0: the flow's own times
    ours = SAMPLERS["euler"].build(model.denoiser(), x.clone(), ts)
    assert (ours - theirs).abs().max().item() < 1e-5 * max(1.0, theirs.abs().max().item())


def test_trained_betas_and_dynamic_shifting_reproduce_diffusers_loops(tmp_path):
    """A DDPM scheduler with `trained_betas` (here a chain no named schedule gives) becomes genkit's
    chain on those betas: `ddim` reproduces DDIMScheduler's trailing loop to 1e-5. A flow-matching
    scheduler with `use_dynamic_shifting` becomes a flow with the shift e^mu its pipeline computes
    for the model's token count (SD3's `calculate_shift`): `euler` reproduces its loop at that mu."""
    betas = (torch.linspace(1e-4, 0.03, 1000) ** 1.5 + 1e-5).tolist()
    folder = save_pipeline(tmp_path / "trained", tiny_unet(seed=6), DDIMScheduler(
        trained_betas=betas, prediction_type="v_prediction", timestep_spacing="trailing", clip_sample=False))
    model = genkit.load(folder)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    theirs = diffusers_loop(folder, DDIMScheduler, x, 10, eta=0.0)
    ours = SAMPLERS["ddim"].build(model.denoiser(), x.clone(), model.path.timesteps(10, "trailing"))
    assert (ours - theirs).abs().max().item() < 1e-5 * max(1.0, theirs.abs().max().item())

    options = dict(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=16,
                   max_image_seq_len=256)
    folder = save_pipeline(tmp_path / "dynamic", tiny_unet(seed=7), FlowMatchEulerDiscreteScheduler(**options))
    model = genkit.load(folder)  # an 8 x 8 UNet: 64 tokens
    mu = 0.5 + (1.15 - 0.5) * (64 - 16) / (256 - 16)  # SD3's calculate_shift (its module needs transformers)
    assert model.path.shift == pytest.approx(math.exp(mu), rel=1e-12)
    reference = FlowMatchEulerDiscreteScheduler(**options)
    reference.set_timesteps(6, mu=mu)
    unet = UNet2DModel.from_pretrained(folder, subfolder="unet")
    theirs = x.clone()
    with torch.no_grad():
        for k in reference.timesteps:
            theirs = reference.step(unet(theirs, k).sample, k, theirs).prev_sample
    ours = SAMPLERS["euler"].build(model.denoiser(), x.clone(), reference.sigmas.double())
    assert (ours - theirs).abs().max().item() < 1e-5 * max(1.0, theirs.abs().max().item())


def test_wrapped_model_takes_every_sampler_and_class_labels(tmp_path):
    """A class-conditional UNet samples its classes with any genkit sampler (here DPM-Solver++ with its
    corrector, and the default on its fixed grid), the same image for the same (seed, i) whatever the
    batch; asking for guidance, which needs a null class it lacks, is refused naming the argument."""
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
                              clip_sample=False)
    folder = save_pipeline(tmp_path / "classes", tiny_unet(classes=4, seed=5), scheduler)
    model = genkit.load(folder)
    assert model.num_classes == 4 and model.cfg.method.ddpm.beta_schedule == "cosine"
    drawn = model.sample(4, seed=0, sampler="dpmpp_2m_pc", steps=6, labels=[0, 1, 2, 3], progress=False)
    alone = model.sample(1, seed=0, sampler="dpmpp_2m_pc", steps=6, labels=[2], start_index=2, progress=False)
    assert torch.isfinite(drawn.images).all() and torch.allclose(drawn.images[2:3], alone.images, atol=1e-5)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([1, 3])
    theirs = diffusers_loop(folder, DDIMScheduler, x, 10, labels=labels, eta=0.0)
    ours = SAMPLERS["ddim"].build(model.denoiser(labels=labels), x.clone(), model.path.timesteps(10, "leading"))
    assert (ours - theirs).abs().max().item() < 1e-5 * max(1.0, theirs.abs().max().item())
    with pytest.raises(ArgumentError, match="guidance: .* no null class"):
        model.sample(2, steps=4, guidance=2.0, labels=1, progress=False)


def test_a_unet_whose_last_class_embedding_is_its_null_class_samples_with_guidance(tmp_path, imagefolder):
    """`null_class=True`: a UNet2DModel trained with K + 1 class embeddings, labels dropped to the last,
    is a K-class model whose null class is that row: genkit's `ddim` at guidance 1.5 reproduces a
    diffusers DDIM loop with classifier-free guidance on those two labels to 1e-5; an export keeps
    it; a config fine-tuning it takes label dropout; a DiT, which has its own, or a UNet without a
    spare embedding is refused."""
    from genkit.config import ConfigError, load_config
    from tests.conftest import tiny_overrides

    unet = tiny_unet(classes=4, seed=7).eval()
    scheduler = DDIMScheduler(timestep_spacing="trailing", clip_sample=False, prediction_type="v_prediction")
    folder = save_pipeline(tmp_path / "pipe", unet, scheduler)
    model = genkit.from_diffusers(folder, null_class=True)
    assert model.num_classes == 3 and genkit.load(folder).num_classes == 4  # without it: four classes, no guidance
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    labels, guidance = torch.tensor([0, 2]), 1.5
    scheduler.set_timesteps(10)
    theirs = guided_loop(scheduler, x, guidance, lambda xx, k: unet(xx, k, class_labels=torch.tensor([0, 2, 3, 3]))
                         .sample.chunk(2))
    ts = torch.cat([model.path.timestep_to_t(scheduler.timesteps), torch.zeros(1, dtype=torch.float64)])
    ours = SAMPLERS["ddim"].build(model.denoiser(labels=labels, guidance=guidance), x.clone(), ts)
    assert (ours - theirs).abs().max().item() < 1e-5 * max(1.0, theirs.abs().max().item())
    unguided = SAMPLERS["ddim"].build(model.denoiser(labels=labels), x.clone(), ts)
    assert (unguided - theirs).abs().max().item() > 1e-3  # guidance changed the images
    genkit.save_pretrained(model, tmp_path / "export", grid=0)
    exported = genkit.load(tmp_path / "export")
    assert exported.num_classes == 3 and exported.cfg.model.diffusers.null_class
    drawn = exported.sample(2, steps=4, guidance=2.0, labels=[0, 2], progress=False, seed=3)
    again = model.sample(2, steps=4, guidance=2.0, labels=[0, 2], progress=False, seed=3)
    assert torch.allclose(drawn.images, again.images, atol=1e-6)
    five = save_pipeline(tmp_path / "five", tiny_unet(classes=5), scheduler)  # 4 classes, as the image folder has
    overrides = tiny_overrides(imagefolder, tmp_path / "run") + [
        "model.name=diffusers", f"model.diffusers.path={five / 'unet'}", "method.prediction=v", "method.p_uncond=0.1",
        "data.image_size=8"]
    with pytest.raises(ConfigError, match="has 5 classes, not 4 .* model.diffusers.null_class=true"):
        load_config(None, overrides)
    with pytest.raises(ConfigError, match="method.p_uncond: .* model.diffusers.null_class=true"):
        load_config(None, overrides + ["model.num_classes=5"])
    assert load_config(None, overrides + ["model.diffusers.null_class=true"]).method.p_uncond == 0.1
    with pytest.raises(ConfigError, match="null_class: .* has 0 class embeddings"):
        genkit.from_diffusers(save_pipeline(tmp_path / "none", tiny_unet(), scheduler), null_class=True)
    dit = tmp_path / "dit"
    tiny_dit().save_pretrained(dit / "transformer")
    scheduler.save_pretrained(dit / "scheduler")
    (dit / "model_index.json").write_text(json.dumps({"_class_name": "DiTPipeline",
                                                      "transformer": ["diffusers", "DiTTransformer2DModel"],
                                                      "scheduler": ["diffusers", "DDIMScheduler"]}))
    with pytest.raises(ConfigError, match="null_class: a DiTTransformer2DModel has its null class already"):
        genkit.from_diffusers(dit, null_class=True)


def test_scheduler_configs_map_to_genkit_paths_or_are_refused(tmp_path):
    """diffusers' names map onto genkit's (squaredcos_cap_v2 -> cosine, epsilon -> eps, rescaled
    betas -> zero terminal SNR); what genkit's paths cannot hold is refused in one line; the
    command line samples a pipeline folder as it does a run."""
    ddpm = method_from_scheduler(dict(DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="sample",
                                                    rescale_betas_zero_snr=True).config, _class_name="DDPMScheduler"))
    assert ddpm == {"name": "ddpm", "prediction": "x0",
                    "ddpm": {"beta_schedule": "cosine", "beta_start": 1e-4, "beta_end": 0.02, "num_timesteps": 1000,
                             "zero_terminal_snr": True}}
    with pytest.raises(ArgumentError, match="beta_schedule 'laplace'"):
        method_from_scheduler({"_class_name": "DDPMScheduler", "beta_schedule": "laplace"})
    with pytest.raises(ArgumentError, match="shifts its times linearly"):
        method_from_scheduler({"_class_name": "FlowMatchEulerDiscreteScheduler", "use_dynamic_shifting": True,
                               "time_shift_type": "linear"}, tokens=64)
    with pytest.raises(ArgumentError, match="not a diffusers pipeline folder"):
        genkit.from_diffusers(tmp_path)
    folder = save_pipeline(tmp_path / "pipe", tiny_unet(), DDIMScheduler())
    index = json.loads((folder / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DModel"] and genkit.load(folder).cfg.model.name == "diffusers"
    grid = tmp_path / "grid.png"
    assert main(["sample", "--checkpoint", str(folder), "--out", str(grid), "--num", "4", "--steps", "3"]) == 0
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_scores_a_diffusers_pipeline_against_the_data_named(tmp_path, digits):
    """A pipeline folder names no data set: `genkit eval --data PATH` scores its samples against
    PATH's test split, at the model's geometry."""
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=32, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)
    folder = save_pipeline(tmp_path / "pipe", unet, DDIMScheduler())
    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(folder), "--num", "8", "--steps", "2", "--json", str(out)]) == 2
    assert main(["eval", "--checkpoint", str(folder), "--data", str(digits), "--num", "8", "--steps", "2",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["nfe"] == 2 and report["real_data_floor"]["fid"] < report["metrics"]["fid"]


def tiny_dit(channels: int = 1, classes: int = 3, seed: int = 0):
    """A randomly initialised pixel-space DiT (learnt variance: twice the channels out)."""
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(seed)
    dit = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=channels,
                                out_channels=2 * channels, num_layers=1, sample_size=8, patch_size=2,
                                num_embeds_ada_norm=classes)
    with torch.no_grad():
        for p in dit.parameters():  # DiT zero-initialises its modulation and output: give them weights
            p.add_(torch.randn_like(p) * 0.05)
    return dit


def test_a_dit_folder_samples_with_guidance_as_diffusers_dit_loop(tmp_path):
    """A DiTTransformer2DModel pipeline folder (`transformer/`) is a class-conditional genkit model whose
    null class is DiT's own (label `num_embeds_ada_norm`): genkit's `ddim` with guidance 1.5
    reproduces DiTPipeline's loop (conditional and null halves, guidance on the predicted noise, its
    learnt variance dropped) on diffusers' DDIM to 1e-5."""
    dit, scheduler = tiny_dit().eval(), DDIMScheduler(timestep_spacing="trailing", clip_sample=False)
    folder = tmp_path / "dit"
    dit.save_pretrained(folder / "transformer")
    scheduler.save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "DiTPipeline",
                                                         "transformer": ["diffusers", "DiTTransformer2DModel"],
                                                         "scheduler": ["diffusers", "DDIMScheduler"]}))
    model = genkit.load(folder)
    assert (model.num_classes, model.cfg.data.channels, model.cfg.data.image_size) == (3, 1, 8)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    labels, guidance = torch.tensor([0, 2]), 1.5
    scheduler.set_timesteps(10)  # its last step lands on t = 0 (k - T / steps < 0), as genkit's grid ends
    theirs = guided_loop(scheduler, x, guidance, lambda xx, k: dit(xx, timestep=k.expand(4), class_labels=torch.tensor(
        [0, 2, 3, 3])).sample[:, :1].chunk(2))  # its learnt variance dropped
    ts = torch.cat([model.path.timestep_to_t(scheduler.timesteps), torch.zeros(1, dtype=torch.float64)])
    ours = SAMPLERS["ddim"].build(model.denoiser(labels=labels, guidance=guidance), x.clone(), ts)
    assert (ours - theirs).abs().max().item() < 1e-5 * max(1.0, theirs.abs().max().item())
    unguided = SAMPLERS["ddim"].build(model.denoiser(labels=labels), x.clone(), ts)
    assert (unguided - theirs).abs().max().item() > 1e-3  # guidance changed the images
    (folder / "vae").mkdir()  # a latent pipeline's autoencoder, but not one genkit can decode with
    with pytest.raises(ArgumentError, match="vae holds no diffusers AutoencoderKL"):
        genkit.load(folder)


def test_a_latent_dit_pipeline_samples_as_dit_pipeline_through_its_autoencoder(tmp_path):
    """A latent DiTPipeline (`transformer/`, `vae/` an AutoencoderKL, `scheduler/`), as a folder or an
    object, is a latent genkit model: the DiT denoises latents, genkit's `ddim` with guidance 1.5 and
    the decoder reproduce DiTPipeline's loop and its decode (latents / scaling_factor) to 1e-5, and
    `sample` draws pixels at the autoencoder's scale."""
    from diffusers import AutoencoderKL, DiTPipeline

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                        norm_num_groups=4, sample_size=16, scaling_factor=0.5).eval()
    dit, scheduler = tiny_dit(channels=4).eval(), DDIMScheduler(timestep_spacing="trailing", clip_sample=False)
    folder = tmp_path / "latent_dit"
    DiTPipeline(transformer=dit, vae=vae, scheduler=scheduler).save_pretrained(folder)
    model = genkit.load(folder)
    data = model.cfg.data
    assert (data.channels, data.image_size, data.latent_channels, data.latent_size) == (3, 16, 4, 8)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    labels, guidance = torch.tensor([0, 2]), 1.5
    scheduler.set_timesteps(5)  # DDIM steps to k - T // steps: on its own timesteps where steps divides T
    theirs = z.clone()
    with torch.no_grad():
        for k in scheduler.timesteps:
            out = dit(torch.cat([theirs, theirs]), timestep=k.expand(4), class_labels=torch.tensor([0, 2, 3, 3])).sample
            cond, null = out[:, :4].chunk(2)
            theirs = scheduler.step(null + guidance * (cond - null), k, theirs, eta=0.0).prev_sample
        theirs = vae.decode(theirs / vae.config.scaling_factor).sample  # [2, 4, 8, 8] -> [2, 3, 16, 16]
    ts = torch.cat([model.path.timestep_to_t(scheduler.timesteps), torch.zeros(1, dtype=torch.float64)])
    ours = model.codec.decode(SAMPLERS["ddim"].build(model.denoiser(labels=labels, guidance=guidance), z.clone(), ts))
    assert ours.shape == (2, 3, 16, 16)
    assert (ours - theirs).abs().max().item() < 1e-5 * max(1.0, theirs.abs().max().item())
    drawn = model.sample(2, seed=3, steps=3, labels=[0, 1], guidance=1.5, progress=False).images
    from_object = genkit.from_diffusers(DiTPipeline.from_pretrained(folder))
    again = from_object.sample(2, seed=3, steps=3, labels=[0, 1], guidance=1.5, progress=False).images
    assert drawn.shape == (2, 3, 16, 16) and torch.allclose(drawn, again, atol=1e-6)


def test_an_exact_mixture_denoiser_as_a_diffusers_model_gives_the_closed_form_likelihood():
    """A diffusers `ModelMixin` whose output is the exact noise of a Gaussian mixture, at diffusers'
    timestep k on the scheduler's own betas (genkit's continuous path between its steps), handed to
    `genkit.from_diffusers` as a pipeline object: the probability-flow likelihood through the
    wrapper (its t -> k and prediction conventions) is the mixture's closed-form log density."""
    from diffusers import ConfigMixin, ModelMixin
    from diffusers.configuration_utils import register_to_config

    from genkit.likelihood import log_likelihood
    from genkit.oracles import GaussianMixture
    from genkit.paths.discrete import DiscreteVPPath

    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    path = DiscreteVPPath(scheduler.betas.double())
    mixture = GaussianMixture(torch.tensor([[-0.5, 0.2, 0.4, -0.1], [0.4, -0.3, -0.2, 0.3]]), std=0.2)

    class MixtureNoise(ModelMixin, ConfigMixin):
        @register_to_config
        def __init__(self, sample_size: int = 2, in_channels: int = 1, out_channels: int = 1):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(()))  # a device and dtype for diffusers

        def forward(self, sample, timestep, class_labels=None):
            t = (timestep.double() + 1) / 1000  # diffusers' step k sits at t = (k + 1) / T
            eps = mixture.eps(sample.reshape(len(sample), -1).double(), t.expand(len(sample)), path)
            return SimpleNamespace(sample=eps.reshape(sample.shape).to(sample.dtype))  # as diffusers' outputs

    pipeline = DDPMPipeline(unet=MixtureNoise(), scheduler=scheduler)
    model = genkit.from_diffusers(pipeline)
    assert model.prediction == "eps" and model.cfg.data.image_size == 2
    x = mixture.sample(6, torch.Generator().manual_seed(0)).reshape(6, 1, 2, 2)
    t_min = 1e-3
    log_p = log_likelihood(model.denoiser(), x, estimator="exact", t_min=t_min,
                           prior_logp=lambda z: mixture.log_prob(z.reshape(len(z), -1), 1.0, path))
    exact = mixture.log_prob(x.reshape(6, -1), t_min, path)
    assert torch.allclose(log_p, exact, atol=2e-3), (log_p - exact).abs().max()


def test_a_diffusers_unet_fine_tunes_with_genkits_trainer_resumes_and_loads(tmp_path, imagefolder):
    """`model.name=diffusers` with `model.diffusers.path` trains a diffusers UNet with genkit's trainer
    (its path and prediction as the scheduler's, set in the config), resumes, and loads for sampling;
    label dropout, which needs a null class the UNet lacks, is refused before training."""
    from genkit.config import ConfigError, load_config
    from genkit.training import train
    from tests.conftest import tiny_overrides

    unet = UNet2DModel(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4, num_class_embeds=4)
    folder = save_pipeline(tmp_path / "pipe", unet, DDIMScheduler(prediction_type="v_prediction"))
    wrapped = genkit.load(folder).cfg.method
    overrides = tiny_overrides(imagefolder, tmp_path / "run") + [
        "model.name=diffusers", f"model.diffusers.path={folder / 'unet'}", f"method.name={wrapped.name}",
        f"method.prediction={wrapped.prediction}", "sample.sampler=ddim", "train.max_steps=2",
        "train.checkpoint_every=1"]
    with pytest.raises(ConfigError, match="method.p_uncond: .* no null class"):
        load_config(None, overrides)
    final = train(load_config(None, overrides + ["method.p_uncond=0"]))
    resumed = train(load_config(None, overrides + ["method.p_uncond=0", "train.max_steps=3", "train.resume=latest"]))
    assert final.name == "step-000002" and resumed.name == "step-000003"
    tuned = genkit.load(tmp_path / "run")
    assert tuned.training["step"] == 3 and tuned.sample(2, steps=3, progress=False).images.shape == (2, 1, 16, 16)
    original = UNet2DModel.from_pretrained(folder, subfolder="unet").state_dict()
    assert any(not torch.equal(v, original[k]) for k, v in tuned.net.model.state_dict().items())  # it learnt


def test_a_wrapped_model_exports_and_loads_without_its_folder(tmp_path):
    """`genkit.save_pretrained` on a diffusers model (from a folder, or a pipeline object) writes an
    export that carries the model's architecture (`model.diffusers.config`) with its weights: once
    the original folder is gone, the export samples what the wrapped model sampled."""
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=2.0)
    folder = save_pipeline(tmp_path / "flow", tiny_unet(classes=3, seed=4), scheduler)
    for source in (folder, DDPMPipeline.from_pretrained(folder)):
        model = genkit.from_diffusers(source)
        before = model.sample(3, seed=1, sampler="heun", steps=3, labels=[0, 1, 2], progress=False).images
        export = genkit.save_pretrained(model, tmp_path / f"export-{type(source).__name__}", grid=0)
        moved = folder.rename(tmp_path / "elsewhere")
        try:
            loaded = genkit.load(export)
            after = loaded.sample(3, seed=1, sampler="heun", steps=3, labels=[0, 1, 2], progress=False).images
        finally:
            moved.rename(folder)
        assert loaded.cfg.model.diffusers.config["_class_name"] == "UNet2DModel"
        assert torch.equal(before, after)


def test_init_from_a_diffusers_folder_starts_from_its_weights_and_a_genkit_net_is_refused(tmp_path, imagefolder):
    """`train.init_from=FOLDER` (a pipeline folder) loads its denoiser's weights into a diffusers net of
    the same architecture (here the architecture of another folder, seeded differently); naming it for
    a genkit net is refused in one line saying how to fine-tune it."""
    from genkit.config import ConfigError, load_config
    from genkit.training import train
    from tests.conftest import tiny_overrides

    def unet(seed):
        torch.manual_seed(seed)
        return UNet2DModel(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                           layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                           up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    architecture = save_pipeline(tmp_path / "a", unet(0), DDIMScheduler())
    weights = save_pipeline(tmp_path / "b", unet(1), DDIMScheduler())
    base = tiny_overrides(imagefolder, tmp_path / "run") + [
        "model.num_classes=0", "data.label_column=", "method.p_uncond=0", "train.max_steps=1", "train.lr=1e-9",
        "train.ema_decay=0.5", f"train.init_from={weights}"]
    run = train(load_config(None, base + ["model.name=diffusers", f"model.diffusers.path={architecture / 'unet'}"]))
    tuned = genkit.load(run).net.model.state_dict()
    for source, near in ((weights, True), (architecture, False)):
        reference = UNet2DModel.from_pretrained(source, subfolder="unet").state_dict()
        apart = max((tuned[k] - reference[k]).abs().max().item() for k in reference)
        assert (apart < 1e-6) == near, (source, apart)
    with pytest.raises(ConfigError, match=r"train.init_from: .* holds a diffusers model; .*model.name=diffusers"):
        train(load_config(None, base + ["train.overwrite=true"]))


def test_a_diffusers_model_teaches_consistency_distillation_and_draws_reflow_pairs(tmp_path, imagefolder):
    """A diffusers pipeline folder is a teacher like a genkit run: consistency distillation of a DDPM
    UNet into a genkit UNet trains (without label dropout, which would ask the teacher for the null
    class its class embedding lacks: refused in one line), and `genkit reflow` draws pairs from a
    flow-matching folder, on which a 2-rectified flow starting from that folder's weights trains,
    then InstaFlow's one-step stage."""
    from genkit.config import ConfigError, load_config
    from genkit.reflow import load_pairs
    from genkit.training import train
    from tests.conftest import tiny_overrides

    def unet(seed):
        torch.manual_seed(seed)
        return UNet2DModel(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                           layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                           up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4, num_class_embeds=4)
    ddpm = save_pipeline(tmp_path / "ddpm", unet(0), DDIMScheduler(prediction_type="v_prediction"))
    distil = tiny_overrides(imagefolder, tmp_path / "student") + [
        "method.name=consistency", f"method.consistency.teacher={ddpm}", "train.max_steps=2"]
    with pytest.raises(ConfigError, match="method.p_uncond: the teacher was trained without label dropout"):
        train(load_config(None, distil))  # the UNet's class embedding has no null class
    student = train(load_config(None, distil + ["method.p_uncond=0"]))
    assert genkit.load(student).sample(2, steps=1, progress=False).images.isfinite().all()

    flow = save_pipeline(tmp_path / "flow", unet(1), FlowMatchEulerDiscreteScheduler(shift=1.0))
    pairs = tmp_path / "pairs"
    assert main(["reflow", "--checkpoint", str(flow), "--out", str(pairs), "--num", "8", "--steps", "2"]) == 0
    assert len(load_pairs(pairs)) == 8
    reflowed = train(load_config(None, tiny_overrides(imagefolder, tmp_path / "reflow") + [
        "model.name=diffusers", f"model.diffusers.path={flow / 'unet'}", "method.name=flow", "method.p_uncond=0",
        "method.prediction=velocity", f"data.path={pairs}", f"train.init_from={flow}", "train.max_steps=2"]))
    assert genkit.load(reflowed).sample(2, steps=2, progress=False).images.isfinite().all()
    one_step = train(load_config(None, tiny_overrides(imagefolder, tmp_path / "instaflow") + [  # InstaFlow's stage
        "model.name=diffusers", f"model.diffusers.path={flow / 'unet'}", "method.name=flow", "method.p_uncond=0",
        "method.prediction=velocity", "method.flow.time_density=noise_end", f"data.path={pairs}",
        f"train.init_from={reflowed}", "train.max_steps=2"]))
    assert genkit.load(one_step).sample(2, sampler="euler", steps=1, progress=False).nfe == 1


def test_an_sd3_transformer_with_class_embeddings_samples_as_the_sd3_loop(tmp_path):
    """An SD3-style latent pipeline (SD3Transformer2DModel, an AutoencoderKL with SD3's shift factor,
    FlowMatchEulerDiscreteScheduler with shift 3), conditioned on given text-encoder outputs, one
    pair per class and the empty prompt's last: genkit's `euler` at guidance 2 on the scheduler's
    sigmas and the decoder reproduce the SD3 pipeline's loop (negative and positive halves, guidance
    on the velocity) and its decode (latents / scaling_factor + shift_factor) to 1e-5. Without the
    embeddings it is refused in one line."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel

    torch.manual_seed(0)
    sd3 = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8,
                                num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16,
                                pooled_projection_dim=8, out_channels=4, pos_embed_max_size=8).eval()
    with torch.no_grad():
        for p in sd3.parameters():  # zero-initialised modulation and output: give them weights
            p.add_(torch.randn_like(p) * 0.05)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                        norm_num_groups=4, sample_size=16, scaling_factor=1.5, shift_factor=0.1).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    pipeline = SimpleNamespace(transformer=sd3, vae=vae, scheduler=scheduler)
    prompt, pooled = torch.randn(3, 5, 16), torch.randn(3, 8)  # classes 0 and 1, then the empty prompt
    with pytest.raises(ArgumentError, match="embeddings: a SD3Transformer2DModel is conditioned on text-encoder"):
        genkit.from_diffusers(pipeline)
    model = genkit.from_diffusers(pipeline, embeddings=(prompt, pooled))
    data = model.cfg.data
    assert model.num_classes == 2 and model.path.shift == 3.0
    assert (data.channels, data.image_size, data.latent_channels, data.latent_size) == (3, 16, 4, 8)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    labels, guidance = torch.tensor([1, 0]), 2.0
    scheduler.set_timesteps(4)
    theirs = z.clone()
    with torch.no_grad():
        for k in scheduler.timesteps:
            rows = torch.tensor([2, 2, 1, 0])  # the pipeline's negative (empty) halves, then the positive
            out = sd3(hidden_states=torch.cat([theirs, theirs]), timestep=k.expand(4), encoder_hidden_states=prompt[rows],
                      pooled_projections=pooled[rows]).sample
            null, cond = out.chunk(2)
            theirs = scheduler.step(null + guidance * (cond - null), k, theirs).prev_sample
        theirs = vae.decode(theirs / 1.5 + 0.1).sample  # [2, 4, 8, 8] -> [2, 3, 16, 16]
    ts = scheduler.sigmas.double()  # descending to 0: the flow's times
    ours = model.codec.decode(SAMPLERS["euler"].build(model.denoiser(labels=labels, guidance=guidance), z.clone(), ts))
    assert (ours - theirs).abs().max().item() < 1e-5 * max(1.0, theirs.abs().max().item())
    drawn = model.sample(2, seed=0, steps=3, labels=[0, 1], guidance=2.0, progress=False).images
    assert drawn.shape == (2, 3, 16, 16) and drawn.isfinite().all()
    unconditional = genkit.from_diffusers(pipeline, embeddings=(prompt[2:], pooled[2:]))
    assert unconditional.num_classes == 0 and unconditional.sample(1, steps=2, progress=False).images.isfinite().all()
    folder = tmp_path / "sd3"  # as a folder, from the command line, which has no embeddings to give
    for name, part in (("transformer", sd3), ("vae", vae), ("scheduler", scheduler)):
        part.save_pretrained(folder / name)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusion3Pipeline"}))
    code, stderr = call(main, ["sample", "--checkpoint", str(folder), "--out", str(tmp_path / "x.png")])
    assert code == 2 and "--checkpoint: a SD3Transformer2DModel is conditioned" in stderr and stderr.count("\n") == 1


def test_a_latent_diffusers_pipeline_fine_tunes_through_its_autoencoder_and_loads_without_it(tmp_path, imagefolder):
    """`data.autoencoder=PIPELINE` (its `vae/`, an AutoencoderKL) with the pipeline's transformer as the
    net trains on the images' latents at the autoencoder's own scaling factor; the checkpoint carries
    the autoencoder, so it samples pixels once the pipeline folder is gone."""
    from diffusers import AutoencoderKL, DiTPipeline

    from genkit.config import load_config
    from genkit.training import train
    from tests.conftest import tiny_overrides

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                        norm_num_groups=4, sample_size=16, scaling_factor=0.7).eval()
    folder = tmp_path / "latent_dit"
    DiTPipeline(transformer=tiny_dit(channels=4, classes=4), vae=vae, scheduler=DDIMScheduler()).save_pretrained(folder)
    run = train(load_config(None, tiny_overrides(imagefolder, tmp_path / "run") + [
        "model.name=diffusers", f"model.diffusers.path={folder / 'transformer'}", f"data.autoencoder={folder}",
        "method.name=ddpm", "method.prediction=eps", "sample.sampler=ddim", "train.max_steps=2"]))
    assert (run / "autoencoder" / "config.json").is_file()
    moved = folder.rename(tmp_path / "elsewhere")
    tuned = genkit.load(run)
    assert tuned.codec.scale == 0.7 and (tuned.cfg.data.latent_channels, tuned.cfg.data.latent_size) == (4, 8)
    assert tuned.sample(2, steps=2, progress=False).images.shape == (2, 1, 16, 16)
    assert moved.is_dir()


def tiny_sd3(channels: int, size: int):
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    sd3 = SD3Transformer2DModel(sample_size=size, patch_size=2, in_channels=channels, num_layers=1,
                                attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                                caption_projection_dim=16, pooled_projection_dim=8, out_channels=channels,
                                pos_embed_max_size=size)
    with torch.no_grad():
        for p in sd3.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return sd3.eval()


def test_an_sd3_transformer_keeps_its_embeddings_in_exports_and_fine_tunes_from_a_file(tmp_path, imagefolder):
    """The embeddings are part of the model's weights: an export of an SD3 transformer samples what the
    wrapped model sampled; fine-tuning takes them from a safetensors file (`model.diffusers.embeddings`,
    its rows checked against the classes), and the run loads once the file is gone."""
    from safetensors.torch import save_file

    from genkit.config import ConfigError, load_config
    from genkit.training import train
    from tests.conftest import tiny_overrides

    prompt, pooled = torch.randn(3, 5, 16), torch.randn(3, 8)
    pipeline = SimpleNamespace(transformer=tiny_sd3(1, 8), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
    model = genkit.from_diffusers(pipeline, embeddings=(prompt, pooled))
    before = model.sample(2, seed=0, sampler="euler", steps=3, labels=[0, 1], guidance=2.0, progress=False).images
    loaded = genkit.load(genkit.save_pretrained(model, tmp_path / "export", grid=0))
    after = loaded.sample(2, seed=0, sampler="euler", steps=3, labels=[0, 1], guidance=2.0, progress=False).images
    assert torch.equal(before, after)

    folder = tmp_path / "sd3"
    tiny_sd3(1, 16).save_pretrained(folder / "transformer")
    embeddings = tmp_path / "classes.safetensors"
    save_file({"prompt": torch.randn(5, 5, 16), "pooled": torch.randn(5, 8)}, str(embeddings))  # 4 classes, null
    overrides = tiny_overrides(imagefolder, tmp_path / "run") + [
        "model.name=diffusers", f"model.diffusers.path={folder / 'transformer'}", f"model.diffusers.embeddings={embeddings}",
        "method.name=flow", "method.prediction=velocity", "sample.sampler=euler", "train.max_steps=2"]
    with pytest.raises(ConfigError, match="model.num_classes: 3, but model.diffusers.embeddings holds 5 rows"):
        load_config(None, overrides + ["model.num_classes=3"])
    run = train(load_config(None, overrides))
    embeddings.unlink()
    tuned = genkit.load(run)
    assert tuned.cfg.model.diffusers.embeddings_shape == (5, 5, 16, 8)
    assert tuned.sample(2, steps=2, labels=[0, 3], guidance=1.5, progress=False).images.shape == (2, 1, 16, 16)
