"""Per-sample seeding: with a list of generators (one per sample, diffusers' convention) sample i's
random draws come from generator i alone, so any split of a batch gives bitwise the same results.

Checked in float64 on exact Gaussian scores (elementwise: the batch split cannot change round-off)
for every solver on every process family it applies to, for the Hutchinson likelihood and for the
losses. The one solver that couples samples by design (the Langevin corrector's score_sde
``step_rule="batch"``) is shown to differ under splits, as documented.
"""

from __future__ import annotations

import pytest
import torch
from helpers import PROCESSES as REGISTRY
from hypothesis import given, settings
from hypothesis import strategies as st

import sdesolve as sd
from sdesolve.solvers.base import check_generator, draw

F64 = torch.float64
TARGET = sd.Gaussian(torch.tensor([0.7, -1.2, 0.3], dtype=F64), torch.tensor([0.4, 1.5, 0.05], dtype=F64))
TARGET_2D = sd.Gaussian(
    torch.linspace(-1.0, 1.0, 6, dtype=F64).reshape(2, 3), torch.linspace(0.05, 2.0, 6, dtype=F64).reshape(2, 3)
)
#: a score whose Jacobian is not diagonal (Hutchinson's estimate varies with the probes, Rademacher's too)
MIXTURE = sd.GaussianMixture(
    torch.tensor([0.3, 0.7], dtype=F64),
    torch.tensor([[[1.0, -0.5, 0.2], [0.0, 0.4, -1.0]], [[-0.8, 0.3, 0.5], [0.6, -0.2, 0.1]]], dtype=F64),
    torch.tensor([0.3, 0.6], dtype=F64),
)
PROCESSES = {k: REGISTRY[k] for k in ("vp", "subvp", "ve", "cosine", "discrete", "vdm")}  # the registry's
PREDICTORS = {
    "em": lambda: sd.EulerMaruyamaPredictor(),
    "rd": lambda: sd.ReverseDiffusionPredictor(),
    "rd-song": lambda: sd.ReverseDiffusionPredictor(discretization="song"),
    "ancestral": lambda: sd.AncestralPredictor(),
    "pf": lambda: sd.ReverseDiffusionPredictor(probability_flow=True),
}
CORRECTORS = {
    "none": lambda: None,
    "langevin": lambda: sd.LangevinCorrector(snr=0.16, n_steps=2),
    "langevin-sample": lambda: sd.LangevinCorrector(step_rule="sample"),
    "annealed": lambda: sd.AnnealedLangevinCorrector(snr=0.1, n_steps=1),
}
SOLVERS = {
    "em": lambda: sd.EulerMaruyama(),
    "ddpm-small": lambda: sd.DDPM("small"),
    "ddpm-large": lambda: sd.DDPM("large"),
    "ddim-eta1": lambda: sd.DDIM(eta=1.0),
    "ddim-eta0.3": lambda: sd.DDIM(eta=0.3),
    "ddim": lambda: sd.DDIM(),
    "vdm-ancestral": lambda: sd.VDMAncestral(),
    "plms": lambda: sd.PLMS(),
    "heun": lambda: sd.ODE("heun"),
    "rk4": lambda: sd.ODE("rk4"),
    "dpmpp-2m-sde": lambda: sd.DPMSolverPP(stochastic=True),
    "dpmpp-3m": lambda: sd.DPMSolverPP(order=3),
    "unipc": lambda: sd.UniPC(),
    "dpm-solver-3": lambda: sd.DPMSolver(order=3),
    "edm-heun-churn": lambda: sd.EDMHeun(s_churn=10.0),
    "euler-ancestral": lambda: sd.EulerAncestral(),
    **{
        f"pc-{p}-{c}": (lambda p=p, c=c: sd.PredictorCorrector(PREDICTORS[p](), CORRECTORS[c]()))
        for p in PREDICTORS
        for c in CORRECTORS
    },
}


def _gens(seeds) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def _applies(solver_name: str, process: str) -> bool:
    try:
        SOLVERS[solver_name]().check(PROCESSES[process]())
    except ValueError:
        return False
    return True


CASES = [(s, p) for s in SOLVERS for p in PROCESSES if _applies(s, p)]


# ------------------------------------------------------------------ sample()
@pytest.mark.parametrize("solver_name,process", CASES)
def test_splits_of_a_batch_give_bitwise_the_same_samples(solver_name, process):
    sde, seeds = PROCESSES[process](), range(100, 108)
    model = TARGET.model(sde)

    def run(idx):
        solver = SOLVERS[solver_name]()
        return sd.sample(sde, model, (len(idx), 3), solver=solver, steps=4, generator=_gens(idx), dtype=F64)

    whole = run(list(seeds))
    assert torch.equal(whole, torch.cat([run(list(seeds)[:4]), run(list(seeds)[4:])]))
    assert torch.equal(whole, torch.cat([run(list(seeds)[:3]), run(list(seeds)[3:])]))
    assert torch.isfinite(whole).all() and len({tuple(r.tolist()) for r in whole}) == 8  # 8 different samples


@pytest.mark.parametrize("solver_name", ["em", "ddpm-small", "ddim-eta1", "vdm-ancestral", "pc-rd-langevin"])
def test_a_list_entry_draws_as_its_generator_alone(solver_name):
    """Sample i of a list-seeded batch is the batch of one that generator i draws alone; with any
    event rank, and with x_T given (the noise alone then comes from the list)."""
    sde = sd.VPSDE()
    model = TARGET_2D.model(sde)
    gens = _gens([7, 8, 9])
    batch = sd.sample(sde, model, (3, 2, 3), solver=SOLVERS[solver_name](), steps=5, generator=gens, dtype=F64)
    for i, seed in enumerate([7, 8, 9]):
        g = torch.Generator().manual_seed(seed)
        one = sd.sample(sde, model, (1, 2, 3), solver=SOLVERS[solver_name](), steps=5, generator=g, dtype=F64)
        assert torch.equal(batch[i : i + 1], one)
    x_T = torch.randn(3, 2, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    a = sd.sample(sde, model, x_T=x_T, solver=SOLVERS[solver_name](), steps=5, generator=_gens([1, 2, 3]))
    b = sd.sample(sde, model, x_T=x_T[1:], solver=SOLVERS[solver_name](), steps=5, generator=_gens([2, 3]))
    assert torch.equal(a[1:], b) and not torch.equal(a[0], a[1])


def test_langevin_batch_rule_couples_samples():
    """score_sde's batch-mean step size makes a sample depend on its batch: splits differ (documented)."""
    sde = sd.VESDE()
    model = TARGET.model(sde)

    def run(idx):
        pc = sd.PredictorCorrector(sd.ReverseDiffusionPredictor(), sd.LangevinCorrector(step_rule="batch"))
        return sd.sample(sde, model, (len(idx), 3), solver=pc, steps=4, generator=_gens(idx), dtype=F64)

    whole, halves = run(list(range(8))), torch.cat([run(list(range(4))), run(list(range(4, 8)))])
    assert not torch.equal(whole, halves)


def test_one_generator_still_draws_the_whole_batch_at_once():
    """A single generator keeps its meaning (one draw per step for the whole batch): unchanged samples."""
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    x = sd.sample(sde, model, (4, 3), solver=sd.EulerMaruyama(), steps=3, generator=_gens([5])[0], dtype=F64)
    g = torch.Generator().manual_seed(5)
    x_T = sde.prior_sample((4, 3), generator=g, dtype=F64)
    ref = sd.EulerMaruyama().solve(sde, model, x_T, sd.grids.uniform(sde, 3), generator=g)
    assert torch.equal(x, ref)


# ------------------------------------------------------------------ the draw helper
@pytest.mark.parametrize("kind", ["normal", "uniform", "rademacher"])
def test_draw_per_sample_along_any_batch_dim(kind):
    gens = _gens([3, 4])
    out = draw(kind, (5, 2, 7), gens, device="cpu", dtype=F64, batch_dim=1)
    for i, seed in enumerate([3, 4]):
        alone = draw(kind, (5, 7), torch.Generator().manual_seed(seed), device="cpu", dtype=F64)
        assert torch.equal(out[:, i], alone)
    assert not torch.equal(out[:, 0], out[:, 1])


def test_check_generator_normalizes():
    g = torch.Generator()
    assert check_generator(None) is None and check_generator(g) is g
    assert check_generator((g, g), batch=2) == [g, g]


# ------------------------------------------------------------------ likelihood (Hutchinson probes)
LIKELIHOOD_PROCESSES = ["vp", "subvp", "ve", "discrete", "vdm"]


@pytest.mark.parametrize("process", LIKELIHOOD_PROCESSES)
@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_likelihoods_do_not_depend_on_the_split(process, probe):
    """Per-sample probes from per-sample generators: under a fixed-step method each sample's
    log-likelihood is bitwise the same in a batch of 6, in batches of 2 + 4, and alone."""
    sde = PROCESSES[process]()
    model = MIXTURE.model(sde)
    x = MIXTURE.sample(6, generator=torch.Generator().manual_seed(1))
    seeds = list(range(20, 26))
    kw = dict(divergence="hutchinson", probe=probe, n_probes=2, method="heun", steps=2)

    def run(idx):
        return sd.log_likelihood(sde, model, x[idx], generator=_gens([seeds[i] for i in idx]), **kw).logp

    whole = run(list(range(6)))
    assert torch.equal(whole, torch.cat([run([0, 1]), run([2, 3, 4, 5])]))
    assert torch.equal(whole[3:4], run([3]))
    alone = sd.log_likelihood(sde, model, x[3:4], generator=torch.Generator().manual_seed(seeds[3]), **kw).logp
    assert torch.equal(whole[3:4], alone)
    # the probes matter (the mixture's score Jacobian is not diagonal: another seed, another estimate)
    other = sd.log_likelihood(sde, model, x, generator=_gens(range(6)), **kw).logp
    assert not torch.equal(whole, other)


def test_bits_per_dim_do_not_depend_on_the_split():
    """Dequantization noise and probes of sample i come from generator i."""
    sde = sd.VPSDE()
    target = sd.Gaussian(torch.zeros(4, dtype=F64), torch.full((4,), 0.2, dtype=F64))
    model = target.model(sde)
    k = torch.randint(0, 256, (5, 4), generator=torch.Generator().manual_seed(0))
    kw = dict(method="heun", steps=8, n_repeats=2)

    def run(idx):
        return sd.bits_per_dim(sde, model, k[idx], generator=_gens([40 + i for i in idx]), dtype=F64, **kw)

    whole = run([0, 1, 2, 3, 4])
    assert torch.equal(whole, torch.cat([run([0, 1, 2]), run([3, 4])]))


# ------------------------------------------------------------------ losses
def _loss_cases():
    vp, vdm = sd.VPSDE(), sd.VDMSDE()
    m_vp, m_vdm = TARGET_2D.model(vp), TARGET_2D.model(vdm)
    k = torch.randint(0, 17, (6, 2, 3), generator=torch.Generator().manual_seed(3))
    return {
        "dsm": lambda x, g, idx: sd.dsm_loss(m_vp, x, generator=g),
        "dsm-likelihood": lambda x, g, idx: sd.dsm_loss(m_vp, x, generator=g, likelihood_weighting=True, t_min=1e-3),
        "vdm-continuous": lambda x, g, idx: sd.vdm_diffusion_loss(m_vdm, x, generator=g, antithetic=False),
        "vdm-discrete": lambda x, g, idx: sd.vdm_diffusion_loss(m_vdm, x, n_steps=10, generator=g, antithetic=False),
        "vdm-bpd": lambda x, g, idx: sd.vdm_bits_per_dim(m_vdm, k[idx], 17, generator=g, antithetic=False).bits_per_dim,
        "times": lambda x, g, idx: sd.losses.sample_times(len(idx), n_steps=10**6, antithetic=False, generator=g),
    }


@pytest.mark.parametrize("loss", list(_loss_cases()))
def test_losses_do_not_depend_on_the_split(loss):
    fn = _loss_cases()[loss]
    x = TARGET_2D.sample(6, generator=torch.Generator().manual_seed(2))
    seeds = [60, 61, 62, 63, 64, 65]

    def run(idx):
        return fn(x[idx], _gens([seeds[i] for i in idx]), idx)

    whole = run(list(range(6)))
    assert torch.equal(whole, torch.cat([run([0, 1, 2, 3]), run([4, 5])]))
    assert torch.equal(whole[2:3], fn(x[2:3], torch.Generator().manual_seed(seeds[2]), [2]))
    assert len(set(whole.tolist())) == 6


def test_per_sample_adaptive_likelihoods_do_not_depend_on_the_split():
    """With per-sample adaptive solves (each sample its own steps) and per-sample probes, a sample's
    Hutchinson log-likelihood is bitwise the same whatever its batch."""
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    x = TARGET.sample(4, generator=torch.Generator().manual_seed(1))
    kw = dict(probe="gaussian", per_sample=True, rtol=1e-3, atol=1e-3)

    def run(idx):
        return sd.log_likelihood(sde, model, x[idx], generator=_gens([20 + i for i in idx]), **kw).logp

    whole = run([0, 1, 2, 3])
    assert torch.equal(whole, torch.cat([run([0]), run([1, 2, 3])]))


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(1, 7),
    cut=st.integers(0, 7),
    seed=st.integers(0, 2**31),
    solver=st.sampled_from(["em", "ddpm-large", "vdm-ancestral", "pc-ancestral-annealed", "euler-ancestral"]),
)
def test_any_split_gives_the_same_samples(n, cut, seed, solver):
    """Property: for any batch size and split point, sample(batch) = cat(sample(head), sample(tail))."""
    cut = min(cut, n)
    sde = sd.VPSDE()
    model = TARGET.model(sde)
    seeds = [seed + i for i in range(n)]

    def run(idx):
        if not idx:
            return torch.empty(0, 3, dtype=F64)
        kw = dict(solver=SOLVERS[solver](), steps=3, generator=_gens(idx), dtype=F64)
        return sd.sample(sde, model, (len(idx), 3), **kw)

    assert torch.equal(run(seeds), torch.cat([run(seeds[:cut]), run(seeds[cut:])]))


@pytest.mark.gpu
@pytest.mark.parametrize("solver_name", ["em", "ddpm-large", "pc-rd-langevin", "dpmpp-2m-sde"])
def test_splits_on_cuda(solver_name):
    """CUDA generators on a CUDA batch: the same split equality, and a CPU generator is refused."""
    sde = sd.VPSDE()
    model = sd.Gaussian(TARGET.mean.cuda(), TARGET.std.cuda()).model(sde)

    def run(seeds):
        gens = [torch.Generator("cuda").manual_seed(s) for s in seeds]
        return sd.sample(sde, model, (len(seeds), 3), solver=SOLVERS[solver_name](), steps=6, generator=gens, dtype=F64)

    whole = run(range(8))
    assert whole.is_cuda and torch.equal(whole, torch.cat([run(range(5)), run(range(5, 8))]))
    with pytest.raises(ValueError, match=r"generator\[1\] is on cpu but the samples are on cuda"):
        gens = [torch.Generator("cuda"), torch.Generator()]
        sd.sample(sde, model, (2, 3), solver=sd.DDPM(), steps=2, generator=gens, device="cuda")
