"""Bad input to the diffusers schedulers (sdesolve.diffusers): constructors, set_timesteps, step, add_noise."""

from __future__ import annotations

import importlib.util

import torch

from . import Case

if importlib.util.find_spec("diffusers") is not None:  # the optional extra; without it, no cases
    from sdesolve.diffusers import ScoreSdeVpScheduler, VDMScheduler

Z = torch.zeros(2, 3)


def _d(**kw):
    """A discrete VDMScheduler with 10 inference steps set (timesteps 90, 80, ..., 0)."""
    s = VDMScheduler(num_train_timesteps=100, **kw)
    s.set_timesteps(10)
    return s


def _c():
    s = VDMScheduler()
    s.set_timesteps(4)
    return s


def _case(id, call, error, match):
    return Case(f"diffusers-{id}", call, error, match)


CASES = (
    []
    if importlib.util.find_spec("diffusers") is None
    else [
        # VDMScheduler(...)
        _case(
            "vdm-num_train_timesteps-0",
            lambda: VDMScheduler(num_train_timesteps=0),
            ValueError,
            r"num_train_timesteps must be an int >= 1",
        ),
        _case(
            "vdm-num_train_timesteps-float",
            lambda: VDMScheduler(num_train_timesteps=10.0),
            TypeError,
            r"num_train_timesteps must be an int",
        ),
        _case(
            "vdm-beta_schedule-unknown",
            lambda: VDMScheduler(beta_schedule="cubic"),
            ValueError,
            r"beta_schedule must be one of",
        ),
        _case(
            "vdm-beta_schedule-int", lambda: VDMScheduler(beta_schedule=1), TypeError, r"beta_schedule must be one of"
        ),
        _case(
            "vdm-beta_schedule-discrete-only",
            lambda: VDMScheduler(beta_schedule="scaled_linear"),
            ValueError,
            r"beta_schedule='scaled_linear' is a discrete DDPM schedule: set num_train_timesteps",
        ),
        _case(
            "vdm-clip_sample-str",
            lambda: VDMScheduler(clip_sample="yes"),
            TypeError,
            r"clip_sample must be True or False",
        ),
        _case(
            "vdm-prediction_type-score",
            lambda: VDMScheduler(prediction_type="score"),
            ValueError,
            r"prediction_type must be one of",
        ),
        _case(
            "vdm-thresholding-int",
            lambda: VDMScheduler(thresholding=1),
            TypeError,
            r"thresholding must be True or False",
        ),
        _case(
            "vdm-dynamic_thresholding_ratio-0",
            lambda: VDMScheduler(dynamic_thresholding_ratio=0.0),
            ValueError,
            r"dynamic_thresholding_ratio must be a finite number in \(0, 1\]",
        ),
        _case(
            "vdm-clip_sample_range-neg",
            lambda: VDMScheduler(clip_sample_range=-1.0),
            ValueError,
            r"clip_sample_range must be a finite positive number",
        ),
        _case(
            "vdm-sample_max_value-0",
            lambda: VDMScheduler(sample_max_value=0.0),
            ValueError,
            r"sample_max_value must be a finite positive number",
        ),
        _case(
            "vdm-timestep_spacing-unknown",
            lambda: VDMScheduler(num_train_timesteps=10, timestep_spacing="even"),
            ValueError,
            r"timestep_spacing must be one of",
        ),
        _case(
            "vdm-timestep_spacing-continuous",
            lambda: VDMScheduler(timestep_spacing="linspace"),
            ValueError,
            r"timestep_spacing='linspace' is not used in continuous time",
        ),
        _case(
            "vdm-steps_offset-neg",
            lambda: VDMScheduler(num_train_timesteps=10, steps_offset=-1),
            ValueError,
            r"steps_offset must be an int >= 0",
        ),
        _case(
            "vdm-steps_offset-continuous",
            lambda: VDMScheduler(steps_offset=1),
            ValueError,
            r"steps_offset=1 is not used in continuous time",
        ),
        _case(
            "vdm-beta_start-1",
            lambda: VDMScheduler(num_train_timesteps=10, beta_start=1.0),
            ValueError,
            r"beta_start must be a finite number in \(0, 1\)",
        ),
        _case(
            "vdm-beta_end-str",
            lambda: VDMScheduler(num_train_timesteps=10, beta_end="0.02"),
            TypeError,
            r"beta_end must be a real number",
        ),
        _case(
            "vdm-beta_start-continuous",
            lambda: VDMScheduler(beta_start=0.00085),
            ValueError,
            r"beta_start=0.00085 is not used in continuous time",
        ),
        _case(
            "vdm-trained_betas-length",
            lambda: VDMScheduler(num_train_timesteps=10, trained_betas=[0.1, 0.2]),
            ValueError,
            r"trained_betas must hold num_train_timesteps=10 values",
        ),
        _case(
            "vdm-trained_betas-range",
            lambda: VDMScheduler(num_train_timesteps=2, trained_betas=[0.1, 1.5]),
            ValueError,
            r"trained_betas must lie in \(0, 1\)",
        ),
        _case(
            "vdm-trained_betas-str",
            lambda: VDMScheduler(num_train_timesteps=2, trained_betas="ab"),
            TypeError,
            r"trained_betas must be a 1-d sequence of numbers",
        ),
        _case(
            "vdm-trained_betas-continuous",
            lambda: VDMScheduler(trained_betas=[0.1, 0.2]),
            ValueError,
            r"trained_betas is a discrete DDPM schedule: set num_train_timesteps",
        ),
        _case(
            "vdm-gamma_min-nan",
            lambda: VDMScheduler(beta_schedule="vdm", gamma_min=float("nan")),
            ValueError,
            r"gamma_min must be a finite number",
        ),
        _case(
            "vdm-gamma_max-unused",
            lambda: VDMScheduler(gamma_max=6.0),
            ValueError,
            r"gamma_max=6.0 is not used by beta_schedule='linear'",
        ),
        _case(
            "vdm-gamma-order",
            lambda: VDMScheduler(beta_schedule="vdm", gamma_min=5.0, gamma_max=-5.0),
            ValueError,
            r"gamma_min must be < gamma_max",
        ),
        _case(
            "vdm-beta_min-discrete",
            lambda: VDMScheduler(num_train_timesteps=10, beta_min=0.2),
            ValueError,
            r"beta_min=0.2 is not used with num_train_timesteps=10",
        ),
        _case(
            "vdm-beta_max-inf",
            lambda: VDMScheduler(beta_max=float("inf")),
            ValueError,
            r"beta_max must be a finite number",
        ),
        _case(
            "vdm-cosine_s-0",
            lambda: VDMScheduler(beta_schedule="squaredcos_cap_v2", cosine_s=0.0),
            ValueError,
            r"cosine_s must be a finite positive number",
        ),
        # VDMScheduler.from_config
        _case(
            "vdm-from_config-variance_type",
            lambda: VDMScheduler.from_config({"num_train_timesteps": 10, "variance_type": "learned"}),
            ValueError,
            r"variance_type='learned' .* cannot be mapped",
        ),
        _case(
            "vdm-from_config-zero_snr",
            lambda: VDMScheduler.from_config({"num_train_timesteps": 10, "rescale_betas_zero_snr": True}),
            ValueError,
            r"rescale_betas_zero_snr=True .* cannot be mapped",
        ),
        # set_timesteps
        _case(
            "vdm-set_timesteps-0", lambda: _d().set_timesteps(0), ValueError, r"num_inference_steps must be an int >= 1"
        ),
        _case(
            "vdm-set_timesteps-float", lambda: _d().set_timesteps(5.0), TypeError, r"num_inference_steps must be an int"
        ),
        _case(
            "vdm-set_timesteps-too-many",
            lambda: _d().set_timesteps(101),
            ValueError,
            r"num_inference_steps=101 must be <= num_train_timesteps=100",
        ),
        _case(
            "vdm-set_timesteps-both",
            lambda: _d().set_timesteps(5, timesteps=[9, 5]),
            ValueError,
            r"pass exactly one of num_inference_steps or timesteps",
        ),
        _case(
            "vdm-set_timesteps-none",
            lambda: _d().set_timesteps(),
            ValueError,
            r"pass exactly one of num_inference_steps or timesteps",
        ),
        _case(
            "vdm-set_timesteps-increasing",
            lambda: _d().set_timesteps(timesteps=[5, 9]),
            ValueError,
            r"timesteps must be strictly decreasing",
        ),
        _case(
            "vdm-set_timesteps-range",
            lambda: _d().set_timesteps(timesteps=[100, 5]),
            ValueError,
            r"timesteps must lie in \[0, 99\]",
        ),
        _case(
            "vdm-set_timesteps-float-discrete",
            lambda: _d().set_timesteps(timesteps=[9.5, 5.0]),
            TypeError,
            r"timesteps must be integers in discrete time",
        ),
        _case(
            "vdm-set_timesteps-continuous-zero",
            lambda: _c().set_timesteps(timesteps=[0.5, 0.0]),
            ValueError,
            r"timesteps must lie in \(0, 1\]",
        ),
        _case(
            "vdm-set_timesteps-offset-range",
            lambda: VDMScheduler(num_train_timesteps=10, steps_offset=1).set_timesteps(10),
            ValueError,
            r"timesteps must lie in \[0, 9\]",
        ),
        # step
        _case(
            "vdm-step-model_output-shape",
            lambda: _d().step(torch.zeros(2, 4), 90, Z),
            ValueError,
            r"model_output must be a tensor of sample's shape \(2, 3\)",
        ),
        _case(
            "vdm-step-model_output-list",
            lambda: _d().step([0.0], 90, Z),
            ValueError,
            r"model_output must be a tensor of sample's shape",
        ),
        _case(
            "vdm-step-sample-int",
            lambda: _d().step(Z, 90, torch.zeros(2, 3, dtype=torch.long)),
            TypeError,
            r"sample must be a floating-point tensor",
        ),
        _case(
            "vdm-step-timestep-missing",
            lambda: _d().step(Z, 95, Z),
            ValueError,
            r"timestep 95 is not one of the scheduler's timesteps",
        ),
        _case(
            "vdm-step-timestep-str", lambda: _d().step(Z, "90", Z), TypeError, r"timestep must be a number or a tensor"
        ),
        _case(
            "vdm-step-timestep-several",
            lambda: _d().step(Z, torch.tensor([90, 80]), Z),
            ValueError,
            r"timestep must hold a single value",
        ),
        _case(
            "vdm-step-timestep-empty",
            lambda: _d().step(Z, torch.tensor([]), Z),
            ValueError,
            r"timestep must hold one value",
        ),
        _case(
            "vdm-step-generator-str",
            lambda: _d().step(Z, 90, Z, generator="g"),
            TypeError,
            r"generator must be a torch\.Generator, a list of them",
        ),
        # add_noise / get_velocity
        _case(
            "vdm-add_noise-noise-shape",
            lambda: _d().add_noise(Z, torch.zeros(2, 4), 5),
            ValueError,
            r"noise must have the shape of original_samples \(2, 3\)",
        ),
        _case(
            "vdm-add_noise-original-int",
            lambda: _d().add_noise(torch.zeros(2, 3, dtype=torch.long), Z, 5),
            TypeError,
            r"original_samples must be a floating-point tensor",
        ),
        _case(
            "vdm-add_noise-noise-list",
            lambda: _d().add_noise(Z, [0.0], 5),
            TypeError,
            r"noise must be a floating-point tensor",
        ),
        _case(
            "vdm-add_noise-timesteps-shape",
            lambda: _d().add_noise(Z, Z, torch.tensor([1, 2, 3])),
            ValueError,
            r"timesteps must be a scalar or of shape \(1,\) or \(2,\)",
        ),
        _case(
            "vdm-add_noise-timesteps-range",
            lambda: _d().add_noise(Z, Z, 100),
            ValueError,
            r"timesteps must be timesteps in \[0, 99\]",
        ),
        _case(
            "vdm-add_noise-timesteps-continuous",
            lambda: _c().add_noise(Z, Z, 1.5),
            ValueError,
            r"timesteps must be times in \[0, 1\]",
        ),
        _case(
            "vdm-add_noise-timesteps-str",
            lambda: _d().add_noise(Z, Z, "5"),
            TypeError,
            r"timesteps must be a number or a tensor",
        ),
        _case(
            "vdm-add_noise-timesteps-bool",
            lambda: _d().add_noise(Z, Z, torch.tensor(True)),
            TypeError,
            r"timesteps must be a real tensor or number",
        ),
        _case(
            "vdm-get_velocity-noise-shape",
            lambda: _d().get_velocity(Z, torch.zeros(3), 5),
            ValueError,
            r"noise must have the shape of sample \(2, 3\)",
        ),
        _case(
            "vdm-get_velocity-sample-none",
            lambda: _d().get_velocity(None, Z, 5),
            TypeError,
            r"sample must be a floating-point tensor",
        ),
        _case(
            "vdm-set_process-object", lambda: _d().set_process(object()), TypeError, r"sde must be a sdesolve LinearSDE"
        ),
        # ScoreSdeVpScheduler
        _case(
            "sdevp-step_pred-generator-int",
            lambda: ScoreSdeVpScheduler().step_pred(Z, Z, 1.0, generator=3),
            TypeError,
            r"generator must be a torch\.Generator, a list of them",
        ),
        _case(
            "sdevp-num_train_timesteps-0",
            lambda: ScoreSdeVpScheduler(num_train_timesteps=0),
            ValueError,
            r"num_train_timesteps must be an int >= 1",
        ),
        _case(
            "sdevp-beta_min-str",
            lambda: ScoreSdeVpScheduler(beta_min="0.1"),
            TypeError,
            r"beta_min must be a real number",
        ),
        _case(
            "sdevp-beta_max-nan",
            lambda: ScoreSdeVpScheduler(beta_max=float("nan")),
            ValueError,
            r"beta_max must be a finite number",
        ),
        _case(
            "sdevp-sampling_eps-1",
            lambda: ScoreSdeVpScheduler(sampling_eps=1.0),
            ValueError,
            r"sampling_eps must be a finite number in \[0, 1\)",
        ),
        _case(
            "sdevp-prediction_type-v",
            lambda: ScoreSdeVpScheduler(prediction_type="v_prediction"),
            ValueError,
            r"prediction_type must be one of \('epsilon', 'score'\)",
        ),
        _case(
            "sdevp-set_timesteps-0",
            lambda: ScoreSdeVpScheduler().set_timesteps(0),
            ValueError,
            r"num_inference_steps must be an int >= 1",
        ),
        _case(
            "sdevp-set_timesteps-eps",
            lambda: ScoreSdeVpScheduler().set_timesteps(5, sampling_eps=-0.1),
            ValueError,
            r"sampling_eps must be a finite number in \[0, 1\)",
        ),
        _case(
            "sdevp-step_pred-score-shape",
            lambda: ScoreSdeVpScheduler().step_pred(torch.zeros(2, 4), Z, 1.0),
            ValueError,
            r"score must be a tensor of x's shape \(2, 3\)",
        ),
        _case(
            "sdevp-step_pred-x-int",
            lambda: ScoreSdeVpScheduler().step_pred(Z, torch.zeros(2, 3, dtype=torch.long), 1.0),
            TypeError,
            r"x must be a floating-point tensor",
        ),
        _case(
            "sdevp-step_pred-t-missing",
            lambda: ScoreSdeVpScheduler().step_pred(Z, Z, 0.3),
            ValueError,
            r"timestep 0.3 is not one of the scheduler's timesteps",
        ),
        _case(
            "sdevp-add_noise-shape",
            lambda: ScoreSdeVpScheduler().add_noise(Z, torch.zeros(3), 0.5),
            ValueError,
            r"noise must have the shape of original_samples",
        ),
        _case(
            "sdevp-add_noise-range",
            lambda: ScoreSdeVpScheduler().add_noise(Z, Z, 2.0),
            ValueError,
            r"timesteps must be times in \[0, 1\]",
        ),
    ]
)
