"""Bad input to the training losses (sdesolve.losses): every argument of every loss."""

from __future__ import annotations

import numpy as np
import torch

from sdesolve import VDMSDE, VPSDE, LearnedMonotoneGamma, ScoreModel
from sdesolve.losses import (
    discrete_to_continuous,
    dsm_loss,
    sample_times,
    schedule_variance_loss,
    vdm_bits_per_dim,
    vdm_diffusion_loss,
    vdm_prior_loss,
    vdm_reconstruction_loss,
)

from . import Case

F64 = torch.float64


def _net(x, t):
    return torch.zeros_like(x)


def _vdm():
    return ScoreModel(_net, VDMSDE(), prediction="eps")


def _vp():
    return ScoreModel(_net, VPSDE(), prediction="eps")


def _x(b=4, d=3):
    return torch.zeros(b, d, dtype=F64)


def _xi(b=2, d=3):
    return torch.zeros(b, d, dtype=torch.long)


_T4 = torch.full((4,), 0.5, dtype=F64)


class _DuckProcess:
    """Has what a ScoreModel reads of a process, but is not a LinearSDE (the losses need one)."""

    T = 1.0

    def _log_alpha(self, t):
        return -t

    def _log_sigma(self, t):
        return t

    def network_time(self, t):
        return t


def _gens(n):
    return [torch.Generator().manual_seed(k) for k in range(n)]


CASES = [
    # vdm_diffusion_loss
    Case(
        "losses-diffusion-model-callable",
        lambda: vdm_diffusion_loss(_net, _x()),
        TypeError,
        r"model must be a sdesolve\.ScoreModel",
    ),
    Case(
        "losses-diffusion-x0-list",
        lambda: vdm_diffusion_loss(_vdm(), [[0.0]]),
        TypeError,
        r"x0 must be a torch\.Tensor",
    ),
    Case(
        "losses-diffusion-x0-int",
        lambda: vdm_diffusion_loss(_vdm(), _xi()),
        TypeError,
        r"x0 must be a floating-point tensor",
    ),
    Case(
        "losses-diffusion-x0-0d",
        lambda: vdm_diffusion_loss(_vdm(), torch.tensor(1.0)),
        ValueError,
        r"x0 must have a batch dimension",
    ),
    Case(
        "losses-diffusion-x0-empty",
        lambda: vdm_diffusion_loss(_vdm(), _x(0)),
        ValueError,
        r"x0 must hold at least one example",
    ),
    Case(
        "losses-diffusion-n_steps-0",
        lambda: vdm_diffusion_loss(_vdm(), _x(), n_steps=0),
        ValueError,
        r"n_steps must be None .* positive int",
    ),
    Case(
        "losses-diffusion-n_steps-float",
        lambda: vdm_diffusion_loss(_vdm(), _x(), n_steps=4.0),
        TypeError,
        r"n_steps must be None .* positive int",
    ),
    Case(
        "losses-diffusion-n_steps-str",
        lambda: vdm_diffusion_loss(_vdm(), _x(), n_steps="4"),
        TypeError,
        r"n_steps must be None .* positive int",
    ),
    Case(
        "losses-diffusion-n_steps-vp",
        lambda: vdm_diffusion_loss(_vp(), _x(), n_steps=4),
        ValueError,
        r"n_steps=4: .*sigma\(0\) = 0",
    ),
    Case(
        "losses-diffusion-T-and-n_steps",
        lambda: vdm_diffusion_loss(_vdm(), _x(), n_steps=4, T=4),
        TypeError,
        r"both n_steps= and its deprecated alias T=",
    ),
    Case(
        "losses-diffusion-antithetic-str",
        lambda: vdm_diffusion_loss(_vdm(), _x(), antithetic="yes"),
        TypeError,
        r"antithetic must be True or False",
    ),
    Case(
        "losses-diffusion-generator-int",
        lambda: vdm_diffusion_loss(_vdm(), _x(), generator=0),
        TypeError,
        r"generator must be a torch\.Generator",
    ),
    Case(
        "losses-diffusion-t-list",
        lambda: vdm_diffusion_loss(_vdm(), _x(), t=[0.5] * 4),
        TypeError,
        r"t must be a floating-point tensor of shape \(4,\)",
    ),
    Case(
        "losses-diffusion-t-shape",
        lambda: vdm_diffusion_loss(_vdm(), _x(), t=torch.full((3,), 0.5, dtype=F64)),
        ValueError,
        r"t must be a floating-point tensor of shape \(4,\)",
    ),
    Case(
        "losses-diffusion-t-range",
        lambda: vdm_diffusion_loss(_vdm(), _x(), t=torch.full((4,), 1.5, dtype=F64)),
        ValueError,
        r"^t must lie in \[0, 1\], got values outside$",
    ),
    Case(
        "losses-diffusion-t-zero-n_steps",
        lambda: vdm_diffusion_loss(_vdm(), _x(), n_steps=4, t=torch.zeros(4, dtype=F64)),
        ValueError,
        r"^t must lie in \[0\.25, 1\], got values outside$",
    ),
    Case(
        "losses-diffusion-t-nan",
        lambda: vdm_diffusion_loss(_vdm(), _x(), t=torch.full((4,), float("nan"), dtype=F64)),
        ValueError,
        r"t must lie in",
    ),
    Case(
        "losses-diffusion-t-off-grid",
        lambda: vdm_diffusion_loss(_vdm(), _x(), n_steps=4, t=torch.full((4,), 0.3, dtype=F64)),
        ValueError,
        r"t must lie on the grid",
    ),
    Case(
        "losses-diffusion-t-zero-vp",
        lambda: vdm_diffusion_loss(_vp(), _x(), t=torch.zeros(4, dtype=F64)),
        ValueError,
        r"t must be > 0 where sigma\(t\) = 0",
    ),
    Case(
        "losses-diffusion-noise-shape",
        lambda: vdm_diffusion_loss(_vdm(), _x(), noise=torch.zeros(3, 3)),
        ValueError,
        r"noise must be a tensor of x0's shape",
    ),
    Case(
        "losses-diffusion-noise-list",
        lambda: vdm_diffusion_loss(_vdm(), _x(), noise=[0.0]),
        TypeError,
        r"^noise must be a tensor of x0's shape \(4, 3\), got list$",
    ),
    Case(
        "losses-diffusion-model-sde-duck",
        lambda: vdm_diffusion_loss(ScoreModel(_net, _DuckProcess(), prediction="eps"), _x()),
        TypeError,
        r"^model\.sde must be a LinearSDE, got _DuckProcess$",
    ),
    Case(
        "losses-diffusion-generator-list-short-given-t",
        lambda: vdm_diffusion_loss(_vdm(), _x(), generator=_gens(5), antithetic=False, t=_T4, noise=_x()),
        ValueError,
        r"^generator must be a list of one torch\.Generator per sample \(4 for a batch of 4\), got a list of 5$",
    ),
    Case(
        "losses-diffusion-generator-device-given-t",
        lambda: vdm_diffusion_loss(
            _vdm(), torch.zeros(4, 3, dtype=F64, device="meta"), generator=torch.Generator(), t=_T4, noise=_x()
        ),
        ValueError,
        r"^generator is on cpu but the samples are on meta; pass a generator on meta$",
    ),
    # sample_times
    Case("losses-times-batch-0", lambda: sample_times(0), ValueError, r"batch must be an int >= 1"),
    Case("losses-times-batch-float", lambda: sample_times(2.5), TypeError, r"batch must be an int"),
    Case(
        "losses-times-n_steps-neg",
        lambda: sample_times(4, n_steps=-1),
        ValueError,
        r"n_steps must be None .* positive int",
    ),
    Case(
        "losses-times-antithetic-int",
        lambda: sample_times(4, antithetic=2),
        TypeError,
        r"antithetic must be True or False",
    ),
    Case(
        "losses-times-generator-str",
        lambda: sample_times(4, generator="g"),
        TypeError,
        r"generator must be a torch\.Generator",
    ),
    Case(
        "losses-times-generator-device",
        lambda: sample_times(4, generator=torch.Generator(), device="meta"),
        ValueError,
        r"^generator is on cpu but the samples are on meta; pass a generator on meta$",
    ),
    # vdm_prior_loss
    Case(
        "losses-prior-sde-object",
        lambda: vdm_prior_loss(object(), _x()),
        TypeError,
        r"sde must be a sdesolve LinearSDE",
    ),
    Case(
        "losses-prior-x0-empty",
        lambda: vdm_prior_loss(VDMSDE(), _x(0)),
        ValueError,
        r"x0 must hold at least one example",
    ),
    Case(
        "losses-prior-x0-int", lambda: vdm_prior_loss(VDMSDE(), _xi()), TypeError, r"x0 must be a floating-point tensor"
    ),
    # vdm_reconstruction_loss
    Case(
        "losses-recon-sde-str",
        lambda: vdm_reconstruction_loss("vdm", _xi(), 17),
        TypeError,
        r"sde must be a sdesolve LinearSDE",
    ),
    Case(
        "losses-recon-x_int-list",
        lambda: vdm_reconstruction_loss(VDMSDE(), [[0]], 17),
        TypeError,
        r"x_int must be a tensor of integers",
    ),
    Case(
        "losses-recon-x_int-range",
        lambda: vdm_reconstruction_loss(VDMSDE(), torch.full((2, 3), 17), 17),
        ValueError,
        r"x_int must hold integers in \[0, 16\]",
    ),
    Case(
        "losses-recon-x_int-fraction",
        lambda: vdm_reconstruction_loss(VDMSDE(), torch.full((2, 3), 0.5), 17),
        ValueError,
        r"x_int must hold integers",
    ),
    Case(
        "losses-recon-x_int-0d",
        lambda: vdm_reconstruction_loss(VDMSDE(), torch.tensor(1), 17),
        ValueError,
        r"x_int must have a batch dimension",
    ),
    Case(
        "losses-recon-x_int-empty",
        lambda: vdm_reconstruction_loss(VDMSDE(), _xi(0), 17),
        ValueError,
        r"x_int must hold at least one example",
    ),
    Case(
        "losses-recon-x_int-bool",
        lambda: vdm_reconstruction_loss(VDMSDE(), torch.zeros(2, 3, dtype=torch.bool), 17),
        TypeError,
        r"x_int must be a tensor of integers",
    ),
    Case(
        "losses-recon-vocab-1",
        lambda: vdm_reconstruction_loss(VDMSDE(), _xi(), 1),
        ValueError,
        r"vocab_size must be an int >= 2",
    ),
    Case(
        "losses-recon-vocab-float",
        lambda: vdm_reconstruction_loss(VDMSDE(), _xi(), 17.0),
        TypeError,
        r"vocab_size must be an int",
    ),
    Case(
        "losses-recon-generator-int",
        lambda: vdm_reconstruction_loss(VDMSDE(), _xi(), 17, generator=1),
        TypeError,
        r"generator must be a torch\.Generator",
    ),
    Case(
        "losses-recon-noise-shape",
        lambda: vdm_reconstruction_loss(VDMSDE(), _xi(), 17, noise=torch.zeros(5)),
        ValueError,
        r"noise must be a tensor of x0's shape",
    ),
    Case(
        "losses-recon-dtype-int",
        lambda: vdm_reconstruction_loss(VDMSDE(), _xi(), 17, dtype=torch.int64),
        TypeError,
        r"dtype must be a floating-point torch\.dtype",
    ),
    Case(
        "losses-recon-dtype-str",
        lambda: vdm_reconstruction_loss(VDMSDE(), _xi(), 17, dtype="float32"),
        TypeError,
        r"dtype must be a floating-point torch\.dtype",
    ),
    # vdm_bits_per_dim
    Case(
        "losses-bpd-model-sde",
        lambda: vdm_bits_per_dim(VDMSDE(), _xi(), 17),
        TypeError,
        r"model must be a sdesolve\.ScoreModel",
    ),
    Case(
        "losses-bpd-x_int-range",
        lambda: vdm_bits_per_dim(_vdm(), torch.full((2, 3), -1), 17),
        ValueError,
        r"x_int must hold integers in \[0, 16\]",
    ),
    Case(
        "losses-bpd-x_int-empty",
        lambda: vdm_bits_per_dim(_vdm(), _xi(0), 17),
        ValueError,
        r"x_int must hold at least one example",
    ),
    Case(
        "losses-bpd-vocab-0", lambda: vdm_bits_per_dim(_vdm(), _xi(), 0), ValueError, r"vocab_size must be an int >= 2"
    ),
    Case(
        "losses-bpd-n_steps-0",
        lambda: vdm_bits_per_dim(_vdm(), _xi(), 17, n_steps=0),
        ValueError,
        r"n_steps must be None .* positive int",
    ),
    Case(
        "losses-bpd-n_repeats-0",
        lambda: vdm_bits_per_dim(_vdm(), _xi(), 17, n_repeats=0),
        ValueError,
        r"n_repeats must be an int >= 1, got 0",
    ),
    Case(
        "losses-bpd-n_repeats-float",
        lambda: vdm_bits_per_dim(_vdm(), _xi(), 17, n_repeats=2.0),
        TypeError,
        r"n_repeats must be an int",
    ),
    Case(
        "losses-bpd-progress-str",
        lambda: vdm_bits_per_dim(_vdm(), _xi(), 17, progress="yes"),
        TypeError,
        r"progress must be True or False, got 'yes'",
    ),
    Case(
        "losses-bpd-antithetic-none",
        lambda: vdm_bits_per_dim(_vdm(), _xi(), 17, antithetic=None),
        TypeError,
        r"antithetic must be True or False",
    ),
    Case(
        "losses-bpd-generator-str",
        lambda: vdm_bits_per_dim(_vdm(), _xi(), 17, generator="0"),
        TypeError,
        r"generator must be a torch\.Generator",
    ),
    Case(
        "losses-bpd-dtype-bool",
        lambda: vdm_bits_per_dim(_vdm(), _xi(), 17, dtype=torch.bool),
        TypeError,
        r"dtype must be a floating-point torch\.dtype",
    ),
    # discrete_to_continuous
    Case(
        "losses-d2c-x_int-list",
        lambda: discrete_to_continuous([0, 1], 17),
        TypeError,
        r"x_int must be a tensor of integers",
    ),
    Case("losses-d2c-vocab-bool", lambda: discrete_to_continuous(_xi(), True), TypeError, r"vocab_size must be an int"),
    Case(
        "losses-d2c-dtype-str",
        lambda: discrete_to_continuous(_xi(), 17, dtype="f"),
        TypeError,
        r"dtype must be a floating-point torch\.dtype",
    ),
    # schedule_variance_loss
    Case(
        "losses-variance-model-vp",
        lambda: schedule_variance_loss(_vp(), _x()),
        TypeError,
        r"^schedule_variance_loss needs a ScoreModel of a VDMSDE, got one of VPSDE$",
    ),
    Case(
        "losses-variance-fixed-gamma",
        lambda: schedule_variance_loss(_vdm(), _x()),
        ValueError,
        r"has no shape parameters",
    ),
    Case(
        "losses-variance-x0-empty",
        lambda: schedule_variance_loss(ScoreModel(_net, VDMSDE(LearnedMonotoneGamma()), prediction="eps"), _x(0)),
        ValueError,
        r"x0 must hold at least one example",
    ),
    Case(
        "losses-variance-t-shape",
        lambda: schedule_variance_loss(
            ScoreModel(_net, VDMSDE(LearnedMonotoneGamma()), prediction="eps"), _x(), t=torch.zeros(2, dtype=F64)
        ),
        ValueError,
        r"t must be a floating-point tensor of shape \(4,\)",
    ),
    # dsm_loss
    Case("losses-dsm-model-net", lambda: dsm_loss(_net, _x()), TypeError, r"model must be a sdesolve\.ScoreModel"),
    Case("losses-dsm-x0-empty", lambda: dsm_loss(_vp(), _x(0)), ValueError, r"x0 must hold at least one example"),
    Case("losses-dsm-x0-numpy", lambda: dsm_loss(_vp(), np.zeros((4, 3))), TypeError, r"x0 must be a torch\.Tensor"),
    Case(
        "losses-dsm-likelihood-str",
        lambda: dsm_loss(_vp(), _x(), likelihood_weighting="g2"),
        TypeError,
        r"likelihood_weighting must be True or False",
    ),
    Case(
        "losses-dsm-t_min-1",
        lambda: dsm_loss(_vp(), _x(), t_min=1.0),
        ValueError,
        r"t_min must be a finite number in \[0, 1\)",
    ),
    Case("losses-dsm-t_min-str", lambda: dsm_loss(_vp(), _x(), t_min="0.1"), TypeError, r"t_min must be a real number"),
    Case(
        "losses-dsm-t_min-zero-vp",
        lambda: dsm_loss(_vp(), _x(), t_min=0.0),
        ValueError,
        r"t_min must be > 0 where sigma\(t_min\) = 0",
    ),
    Case(
        "losses-dsm-eps_t-and-t_min",
        lambda: dsm_loss(_vp(), _x(), t_min=0.1, eps_t=0.1),
        TypeError,
        r"both t_min= and its deprecated alias eps_t=",
    ),
    Case(
        "losses-dsm-generator-int",
        lambda: dsm_loss(_vp(), _x(), generator=3),
        TypeError,
        r"generator must be a torch\.Generator",
    ),
    Case(
        "losses-dsm-t-zero-vp",
        lambda: dsm_loss(_vp(), _x(), t=torch.tensor([0.0, 0.5, 0.5, 0.5], dtype=F64)),
        ValueError,
        r"t must be > 0 where sigma\(t\) = 0",
    ),
    Case(
        "losses-dsm-t-int",
        lambda: dsm_loss(_vp(), _x(), t=torch.ones(4, dtype=torch.long)),
        TypeError,
        r"t must be a floating-point tensor",
    ),
    Case(
        "losses-dsm-t-range",
        lambda: dsm_loss(_vp(), _x(), t=torch.full((4,), 2.0, dtype=F64)),
        ValueError,
        r"t must lie in \[0, 1\]",
    ),
    Case(
        "losses-dsm-noise-shape",
        lambda: dsm_loss(_vp(), _x(), noise=torch.zeros(4)),
        ValueError,
        r"noise must be a tensor of x0's shape",
    ),
    Case(
        "losses-dsm-reduce-sum",
        lambda: dsm_loss(_vp(), _x(), reduce="sum"),
        ValueError,
        r"reduce must be one of \('none', 'mean'\)",
    ),
    Case("losses-dsm-reduce-none-obj", lambda: dsm_loss(_vp(), _x(), reduce=None), TypeError, r"reduce must be one of"),
    # whole messages: each names what came
    Case(
        "losses-dsm-t-int-message",
        lambda: dsm_loss(_vp(), _x(), t=torch.ones(4, dtype=torch.long)),
        TypeError,
        r"^t must be a floating-point tensor of shape \(4,\), got a torch\.int64 tensor$",
    ),
    Case(
        "losses-dsm-t-list-message",
        lambda: dsm_loss(_vp(), _x(), t=[0.5] * 4),
        TypeError,
        r"^t must be a floating-point tensor of shape \(4,\), got list$",
    ),
    Case(
        "losses-dsm-t-above-T",
        lambda: dsm_loss(_vp(), _x(), t=torch.full((4,), 2.0, dtype=F64)),
        ValueError,
        r"^t must lie in \[0, 1\], got values outside",
    ),
    Case(
        "losses-recon-dtype-str-message",
        lambda: vdm_reconstruction_loss(VDMSDE(), _xi(), 17, dtype="float32"),
        TypeError,
        r"^dtype must be a floating-point torch\.dtype or None, got 'float32'$",
    ),
    Case(
        "losses-prior-sde-str-message",
        lambda: vdm_prior_loss("x", _x()),
        TypeError,
        r"^sde must be a sdesolve LinearSDE \(e\.g\. VDMSDE\), got str$",
    ),
    Case(
        "losses-recon-x_int-list-message",
        lambda: vdm_reconstruction_loss(VDMSDE(), [[1, 2]], 17),
        TypeError,
        r"^x_int must be a tensor of integers in \[0, vocab_size\), got list$",
    ),
    Case(
        "losses-d2c-x_int-list-message",
        lambda: discrete_to_continuous([1], 17),
        TypeError,
        r"^x_int must be a tensor of integers in \[0, vocab_size\), got list$",
    ),
    # generator lists (one generator per example)
    Case(
        "losses-dsm-generator-list-short",
        lambda: dsm_loss(_vp(), _x(), generator=_gens(3)),
        ValueError,
        r"generator must be a list of one torch\.Generator per sample \(4 for a batch of 4\), got a list of 3",
    ),
    Case(
        "losses-dsm-generator-list-element",
        lambda: dsm_loss(_vp(), _x(), generator=_gens(3) + [None]),
        TypeError,
        r"generator must be a torch\.Generator, a list of torch\.Generators .*got None at generator\[3\]",
    ),
    Case(
        "losses-dsm-generator-list-device",
        lambda: dsm_loss(_vp(), torch.zeros(4, 3, dtype=F64, device="meta"), generator=_gens(4)),
        ValueError,
        r"generator\[0\] is on cpu but the samples are on meta",
    ),
    Case(
        "losses-diffusion-generator-list-antithetic",
        lambda: vdm_diffusion_loss(_vdm(), _x(), generator=_gens(4)),
        ValueError,
        r"antithetic=True draws one time offset for the whole batch.*pass antithetic=False with a list",
    ),
    Case(
        "losses-diffusion-generator-list-short",
        lambda: vdm_diffusion_loss(_vdm(), _x(), generator=_gens(5), antithetic=False),
        ValueError,
        r"generator must be a list of one torch\.Generator per sample \(4 for a batch of 4\), got a list of 5",
    ),
    Case(
        "losses-bpd-generator-list-short",
        lambda: vdm_bits_per_dim(_vdm(), _xi(), 17, generator=_gens(3), antithetic=False),
        ValueError,
        r"generator must be a list of one torch\.Generator per sample \(2 for a batch of 2\), got a list of 3",
    ),
    Case(
        "losses-times-generator-list-antithetic",
        lambda: sample_times(2, generator=_gens(2)),
        ValueError,
        r"antithetic=True draws one time offset.*pass antithetic=False",
    ),
    Case(
        "losses-times-generator-list-short",
        lambda: sample_times(3, generator=_gens(2), antithetic=False),
        ValueError,
        r"generator must be a list of one torch\.Generator per sample \(3 for a batch of 3\)",
    ),
    Case(
        "losses-recon-generator-list-short",
        lambda: vdm_reconstruction_loss(VDMSDE(), _xi(), 17, generator=_gens(1)),
        ValueError,
        r"generator must be a list of one torch\.Generator per sample \(2 for a batch of 2\)",
    ),
    Case(
        "losses-bpd-generator-list-antithetic",
        lambda: vdm_bits_per_dim(_vdm(), _xi(), 17, generator=_gens(2)),
        ValueError,
        r"antithetic=True draws one time offset.*pass antithetic=False",
    ),
    Case(
        "losses-bpd-generator-list-element",
        lambda: vdm_bits_per_dim(_vdm(), _xi(), 17, generator=[torch.Generator(), 3], antithetic=False),
        TypeError,
        r"generator must be a torch\.Generator, a list of torch\.Generators .*got 3 at generator\[1\]",
    ),
]
