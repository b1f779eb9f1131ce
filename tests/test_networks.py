"""Real networks and conditioning: output objects, extra inputs split with the batch, classifier-free guidance.

The proofs:

* output objects (diffusers' ``UNet2DOutput``, tuples, lists, dicts, namedtuples) give bitwise the
  views of the bare tensor;
* per-sample inputs are routed to their own samples: with an exact class-conditional network
  (class c's data law is a Gaussian, so its score is known in closed form) a mixed-label batch gives,
  sample by sample, the result of sampling each class alone, and the law of each class's samples is
  the exact law of the chain (``chain_moments``) at D = 2, 4, 16, 64; the likelihood of each sample is
  its class's exact log-density; ``select`` and ``GraphSampler`` split and bind them the same way;
* guidance is diffusers' pipeline loop: a class-conditional ``UNet2DModel`` (null class) and a
  text-conditioned ``UNet2DConditionModel`` (prompt and negative-prompt embeddings) sampled with
  ``DDIMScheduler`` and ``noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)``
  by hand, step for step (float64, 1e-12), with one network call of 2B samples per evaluation;
  the guided views equal ``uncond + w (cond - uncond)`` of the separate views in every
  parameterization (guidance commutes with the affine conversions); guiding Gaussian classes of one
  variance samples exactly the Gaussian at the guided mean (a closed form of guidance).
"""

from __future__ import annotations

import collections
import copy
import runpy
import sys
from pathlib import Path

import pytest
import torch
from helpers import chain_moments, check_moments, tiny_unet
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

import sdesolve as sd
from sdesolve.model import PREDICTIONS, GuidedModel, ScoreModel, convert, unwrap_output

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks run fastest on one thread (two threads on a loaded 2-core machine are 100x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _identity(t):
    return t


class ClassGaussians(torch.nn.Module):
    """The exact eps network of class-conditional data ``x0 | c ~ N(mu_c, diag(s_c^2))`` (continuous t).

    Under x_t = alpha x0 + sigma eps the class-c marginal is N(alpha mu_c, alpha^2 s_c^2 + sigma^2), whose
    score is -(x - alpha mu_c) / v and whose eps is -sigma score. Elementwise per sample, so a
    sample's output does not depend on its batch neighbours.
    """

    def __init__(self, sde, means, stds):
        super().__init__()
        self.sde = sde
        self.register_buffer("means", means.to(F64))
        self.register_buffer("stds", stds.to(F64))

    def forward(self, x, t, class_labels):
        shape = (-1,) + (1,) * (x.dim() - 1)
        a = torch.exp(self.sde._log_alpha(t.to(F64))).reshape(shape)
        s = torch.exp(self.sde._log_sigma(t.to(F64))).reshape(shape)
        mu = self.means[class_labels].reshape((-1,) + tuple(x.shape[1:]))
        std = self.stds[class_labels].reshape((-1,) + tuple(x.shape[1:]))
        v = a * a * std * std + s * s
        return (s * (x - a * mu) / v).to(x.dtype)


def _class_laws(D, n_classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = 2.0 * torch.randn(n_classes, D, generator=g, dtype=F64)
    stds = 0.3 + torch.rand(n_classes, D, generator=g, dtype=F64)
    return means, stds


def _class_model(sde, D, **kw):
    means, stds = _class_laws(D)
    return ScoreModel(ClassGaussians(sde, means, stds), sde, prediction="eps", time_input=_identity, **kw), means, stds


class Calls:
    """Wraps a network: records the batch size of every call."""

    def __init__(self, net):
        self.net, self.batches = net, []

    def __call__(self, x, t, **kw):
        self.batches.append(x.shape[0])
        return self.net(x, t, **kw)


def _smooth(x, t, class_labels=None, scale=None):
    """A smooth, nonlinear test network of (x, t, class label)."""
    tt = t.to(x.dtype).reshape((-1,) + (1,) * (x.dim() - 1))
    c = 0.0 if class_labels is None else class_labels.to(x.dtype).reshape((-1,) + (1,) * (x.dim() - 1))
    out = torch.sin(x + c) * (1 + tt) + 0.1 * x**2 - 0.3 * c
    return out if scale is None else scale * out


# ----------------------------------------------------------------------------- output objects
_Out = collections.namedtuple("_Out", ["sample", "extra"])


def _wrappers():
    from diffusers.models.unets.unet_2d import UNet2DOutput

    return {
        "tensor": lambda o: o,
        "UNet2DOutput": lambda o: UNet2DOutput(sample=o),
        "tuple": lambda o: (o,),
        "tuple-with-extras": lambda o: (o, None, "aux"),
        "list": lambda o: [o],
        "dict-sample": lambda o: {"sample": o, "other": o + 1},
        "dict-single": lambda o: {"denoised": o},
        "namedtuple": lambda o: _Out(o, 3),
    }


@pytest.mark.parametrize("form", list(_wrappers()))
@pytest.mark.parametrize("pred", PREDICTIONS)
def test_output_objects_give_the_views_of_the_bare_tensor(form, pred):
    wrap = _wrappers()[form]
    sde = sd.VPSDE()
    x = torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    t = torch.tensor([0.1, 0.3, 0.6, 0.9], dtype=F64)
    bare = ScoreModel(_smooth, sde, prediction=pred, time_input=_identity)
    wrapped = ScoreModel(lambda x, t: wrap(_smooth(x, t)), sde, prediction=pred, time_input=_identity)
    for view in PREDICTIONS:
        assert torch.equal(wrapped.predict(x, t, view), bare.predict(x, t, view)), view
    assert wrapped.nfe == len(PREDICTIONS)


def test_unet2d_model_is_used_as_is():
    """A diffusers UNet2DModel (returning UNet2DOutput) is a ScoreModel network without a wrapper."""
    unet = tiny_unet().double()
    sde = sd.DiscreteVPSDE.from_schedule("linear", 1000)
    model = ScoreModel(unet, sde, prediction="eps")
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=F64)
    t = torch.tensor([0.25, 0.8], dtype=F64)
    with torch.no_grad():
        k = sde.network_time(t)
        assert torch.equal(model.eps(x, t), unet(x, k).sample)
        out = sd.sample(sde, model, x_T=x, solver=sd.DDIM(), steps=3)
    assert out.shape == x.shape and bool(torch.isfinite(out).all()) and model.nfe == 1 + 3


def test_unwrap_output_refuses_what_holds_no_tensor():
    def my_net(x, t):
        return x

    for bad, what in [
        (None, "NoneType"),
        ((), r"tuple of 0 elements"),
        (("a", torch.zeros(1)), r"tuple of 2 elements, the first a str"),
        ({"a": torch.zeros(1), "b": torch.zeros(1)}, r"dict with keys \['a', 'b'\]"),
        ({"sample": None}, r"dict with keys \['sample'\]"),
    ]:
        with pytest.raises(TypeError, match=rf"the network my_net must return a tensor .*got {what}"):
            unwrap_output(bad, my_net)


# ----------------------------------------------------------------------------- model_kwargs
def test_kwargs_reach_the_network_and_bind_on_copies():
    sde = sd.VPSDE()
    seen = []

    def net(x, t, **kw):
        seen.append(kw)
        return 0.5 * x

    m = ScoreModel(net, sde, model_kwargs={"a": 1, "y": torch.arange(3)})
    x = torch.zeros(3, 2)
    m.eps(x, 0.5)
    assert seen[-1]["a"] == 1 and torch.equal(seen[-1]["y"], torch.arange(3))
    m2 = m.with_kwargs(a=2, b="text")
    m2.eps(x, 0.5)
    assert seen[-1]["a"] == 2 and seen[-1]["b"] == "text" and m.model_kwargs["a"] == 1  # the original is unchanged
    # one network, one count: the copies share it; a deep copy (an EMA copy) starts its own
    assert m.nfe == m2.nfe == 2 and m2.net is m.net
    ema = copy.deepcopy(m2)
    ema.eps(x, 0.5)
    assert ema.nfe == 3 and m.nfe == 2
    # sample(model_kwargs=) binds on top of the model's own, and counts on the caller's model
    sd.sample(sde, m, x_T=torch.zeros(3, 2), solver=sd.DDIM(), steps=2, model_kwargs={"b": 5})
    assert seen[-1]["b"] == 5 and seen[-1]["a"] == 1 and m.nfe == 4 and "b" not in m.model_kwargs
    # bound inputs are read-only: a changed label would otherwise be missed by cached checks and guided batches
    with pytest.raises(TypeError):
        m.model_kwargs["a"] = 3
    with pytest.raises(AttributeError):
        m.model_kwargs = {"a": 3}
    guided = m.guided(2.0, {"a": 1})
    with pytest.raises(TypeError):
        guided.uncond_kwargs["a"] = 0


def _rows(value, n):
    """A per-sample input as n rows (one shared row repeated)."""
    return value.expand((n,) + value.shape[1:]) if value.shape[0] == 1 else value


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(0, 7), min_size=1, max_size=8),
    st.lists(st.integers(0, 100), min_size=1, max_size=8),
)
def test_select_composes_like_indexing_the_batch(a, b):
    """select(a).select(b) hands every sample the inputs of x[a][b] (a single row counts as shared by all)."""
    b = [i % len(a) for i in b]
    kw = {"y": torch.arange(8) * 10, "e": torch.arange(16.0).reshape(8, 2), "s": torch.ones(1, 2)}
    m = ScoreModel(lambda x, t, **k: x, sd.VPSDE(), model_kwargs=kw)
    twice, once = m.select(a).select(b), m.select(torch.tensor(a)[b])
    for key in ("y", "e"):
        expected = kw[key][torch.tensor(a)[b]]
        assert torch.equal(_rows(twice.model_kwargs[key], len(b)), expected)
        assert torch.equal(_rows(once.model_kwargs[key], len(b)), expected)
    assert twice.model_kwargs["s"] is kw["s"]


def _kwargs_tree():
    return {
        "labels": torch.tensor([10, 11, 12, 13]),
        "emb": torch.arange(12.0).reshape(4, 3),
        "shared": torch.ones(1, 3),
        "scale": torch.tensor(2.0),
        "flag": True,
        "nested": {"inner": torch.arange(8).reshape(4, 2), "name": "x"},
    }


@pytest.mark.parametrize(
    "index, rows",
    [
        (2, [2]),
        (-1, [3]),
        (slice(1, 3), [1, 2]),
        ([0, 2], [0, 2]),
        (torch.tensor([3, 1]), [3, 1]),
        (torch.tensor([True, False, False, True]), [0, 3]),
        (range(2), [0, 1]),
    ],
)
def test_select_indexes_every_per_sample_input(index, rows):
    kw = _kwargs_tree()
    m = ScoreModel(lambda x, t, **k: x, sd.VPSDE(), model_kwargs=kw)
    s = m.select(index)
    r = torch.tensor(rows)
    assert torch.equal(s.model_kwargs["labels"], kw["labels"][r])
    assert torch.equal(s.model_kwargs["emb"], kw["emb"][r])
    assert torch.equal(s.model_kwargs["nested"]["inner"], kw["nested"]["inner"][r])
    # one shared row, 0-d tensors and other values are kept as they are
    for key in ("shared", "scale", "flag"):
        assert s.model_kwargs[key] is kw[key]
    assert s.model_kwargs["nested"]["name"] == "x" and m.model_kwargs["labels"] is kw["labels"]
    s.eps(torch.zeros(len(rows), 3), 0.5)
    assert m.nfe == 1


def test_select_with_an_empty_list_selects_no_rows():
    """An empty list selects no sample, as ``x[[]]`` does: every per-sample input keeps its trailing shape with
    0 rows (the list becomes an integer index even when it has no element to infer the dtype from)."""
    kw = _kwargs_tree()
    s = ScoreModel(lambda x, t, **k: x, sd.VPSDE(), model_kwargs=kw).select([])
    for got, full in ((s.model_kwargs["labels"], kw["labels"]), (s.model_kwargs["emb"], kw["emb"]),
                      (s.model_kwargs["nested"]["inner"], kw["nested"]["inner"])):  # fmt: skip
        assert got.shape == (0, *full.shape[1:]) and got.dtype == full.dtype
    assert s.model_kwargs["shared"] is kw["shared"]


@pytest.mark.parametrize("solver", [sd.DDIM(), sd.ODE("heun"), sd.PLMS(), sd.DPMSolverPP()], ids=repr)
def test_mixed_labels_give_each_sample_its_class_alone(solver):
    """A batch of mixed labels = each class sampled alone on its own rows of x_T (deterministic solvers)."""
    sde = sd.VPSDE()
    model, _, _ = _class_model(sde, 4)
    labels = torch.tensor([2, 0, 1, 0, 2, 2, 1])
    x_T = torch.randn(7, 4, generator=torch.Generator().manual_seed(3), dtype=F64)
    whole = sd.sample(sde, model, x_T=x_T, solver=solver, steps=12, model_kwargs={"class_labels": labels})
    for c in range(3):
        rows = labels == c
        alone = sd.sample(
            sde,
            model,
            x_T=x_T[rows],
            solver=solver,
            steps=12,
            model_kwargs={"class_labels": c * torch.ones(1, dtype=torch.long)},
        )
        torch.testing.assert_close(whole[rows], alone, rtol=1e-13, atol=1e-13)
    # and select() splits the bound labels with the batch: halves sampled apart give the whole
    bound = model.with_kwargs(class_labels=labels)
    for idx in (slice(0, 3), slice(3, 7)):
        part = sd.sample(sde, bound.select(idx), x_T=x_T[idx], solver=solver, steps=12)
        torch.testing.assert_close(part, whole[idx], rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("D", [2, 4, 16, 64])
def test_class_conditional_sampling_follows_each_class_law(D):
    """Euler-Maruyama with per-sample labels: each class's samples follow that class's exact chain law."""
    sde = sd.VPSDE()
    model, _, _ = _class_model(sde, D)
    solver, steps, n = sd.EulerMaruyama(), 25, 400
    grid = sd.grids.uniform(sde, steps)
    labels = torch.arange(3).repeat_interleave(n)
    x = sd.sample(
        sde, model, (3 * n, D), solver=solver, grid=grid, dtype=F64,
        generator=torch.Generator().manual_seed(D), model_kwargs={"class_labels": labels},
    )  # fmt: skip
    for c in range(3):
        alone = model.with_kwargs(class_labels=torch.tensor([c]))
        mean, var = chain_moments(solver, sde, alone, grid, torch.zeros(D, dtype=F64), torch.ones(D, dtype=F64))
        check_moments(x[labels == c], mean, var, what=f"class {c}, D={D}")


def test_likelihood_with_model_kwargs_is_each_class_exact_log_density():
    sde = sd.VPSDE()
    D = 3
    model, means, stds = _class_model(sde, D)
    labels = torch.tensor([0, 1, 2, 1])
    x = means[labels] + stds[labels] * torch.randn(4, D, generator=torch.Generator().manual_seed(2), dtype=F64)
    kw = {"class_labels": labels}

    def law(t):  # class c's exact marginal at time t: N(alpha mu_c, alpha^2 s_c^2 + sigma^2)
        t = torch.tensor([t], dtype=F64)
        a, s = sde.alpha(t), sde.sigma(t)
        return torch.distributions.Normal(a * means[labels], torch.sqrt(a * a * stds[labels] ** 2 + s * s))

    def prior_logp(z):  # each sample's own class marginal at T (the standard prior is off by alpha(T) mu_c)
        return law(sde.T).log_prob(z).sum(-1)

    opts = dict(divergence="exact", rtol=1e-8, atol=1e-8, prior_logp=prior_logp)
    res = sd.log_likelihood(sde, model, x, model_kwargs=kw, **opts)
    torch.testing.assert_close(res.logp, law(sde.t_min).log_prob(x).sum(-1), rtol=0, atol=1e-5)
    # the same through a bound model, and bits_per_dim passes them on
    bound = sd.log_likelihood(sde, model.with_kwargs(**kw), x, **opts)
    torch.testing.assert_close(bound.logp, res.logp, rtol=0, atol=1e-12)
    bpd = sd.bits_per_dim(sde, model, x, data_range=(-20.0, 20.0), dequantize=None, divergence="exact", model_kwargs=kw)
    assert bpd.shape == (4,) and bool(torch.isfinite(bpd).all())


def test_graph_sampler_binds_model_kwargs():
    sde = sd.VPSDE()
    model, _, _ = _class_model(sde, 4)
    labels = torch.tensor([1, 0, 2])
    x_T = torch.randn(3, 4, generator=torch.Generator().manual_seed(5), dtype=F64)
    gs = sd.GraphSampler(
        sde, model, (3, 4), solver=sd.DDIM(), steps=8, dtype=F64, device="cpu", model_kwargs={"class_labels": labels}
    )
    expected = sd.sample(sde, model, x_T=x_T, solver=sd.DDIM(), steps=8, model_kwargs={"class_labels": labels})
    torch.testing.assert_close(gs(x_T), expected, rtol=1e-14, atol=1e-14)


# ----------------------------------------------------------------------------- classifier-free guidance
def _class_unet(n_classes=3):
    """A tiny random class-conditional diffusers UNet2DModel (one extra class embedding: the null class)."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return (
        UNet2DModel(
            sample_size=8,
            in_channels=1,
            out_channels=1,
            block_out_channels=(8, 16),
            layers_per_block=1,
            norm_num_groups=8,
            down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
            num_class_embeds=n_classes + 1,
        )
        .eval()
        .double()
    )


def _text_unet():
    """A tiny random text-conditioned diffusers UNet2DConditionModel (cross-attention on 6-dim token embeddings)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return (
        UNet2DConditionModel(
            sample_size=8,
            in_channels=1,
            out_channels=1,
            block_out_channels=(8, 16),
            layers_per_block=1,
            norm_num_groups=8,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=6,
            attention_head_dim=2,
        )
        .eval()
        .double()
    )


def _conditioning(kind, B):
    """(network, conditional inputs, unconditional inputs as given to guided, the 2B inputs diffusers builds)."""
    g = torch.Generator().manual_seed(3)
    if kind == "class":  # DiT/class-conditional pipelines: a null class
        labels, null = torch.tensor([0, 2, 1])[:B], torch.tensor([3])
        return (
            _class_unet(),
            {"class_labels": labels},
            {"class_labels": null},
            {"class_labels": torch.cat([null.expand(B), labels])},
        )
    # text pipelines: prompt embeddings and one negative (empty-prompt) embedding, torch.cat([negative, prompt])
    prompt = torch.randn(B, 4, 6, generator=g, dtype=F64)
    negative = torch.randn(1, 4, 6, generator=g, dtype=F64)
    return (
        _text_unet(),
        {"encoder_hidden_states": prompt},
        {"encoder_hidden_states": negative},
        {"encoder_hidden_states": torch.cat([negative.expand(B, -1, -1), prompt])},
    )


@pytest.mark.parametrize("kind", ["class", "text"])
def test_guidance_is_diffusers_pipeline_loop(kind):
    """diffusers' CFG loop by hand (cat([latents] * 2), chunk, uncond + w (cond - uncond), DDIMScheduler.step)
    against sample(GuidedModel, DDIM): every step agrees in float64, and each step is ONE call of 2B samples.
    "class": a UNet2DModel with class embeddings and a null class; "text": a UNet2DConditionModel with prompt
    embeddings and a negative-prompt embedding (encoder_hidden_states)."""
    diffusers = pytest.importorskip("diffusers")
    N, B, w, steps = 1000, 3, 4.0, 6
    unet, cond, uncond, batched = _conditioning(kind, B)
    sched = diffusers.DDIMScheduler(num_train_timesteps=N, clip_sample=False, set_alpha_to_one=True)
    sched.alphas_cumprod = sched.alphas_cumprod.double()
    sched.final_alpha_cumprod = sched.final_alpha_cumprod.double()
    sched.set_timesteps(steps)
    x = torch.randn(B, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=F64)

    theirs, latents = [], x.clone()
    with torch.no_grad():
        for k in sched.timesteps:
            noise_pred = unet(torch.cat([latents] * 2), k, **batched).sample
            noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
            noise_pred = noise_pred_uncond + w * (noise_pred_text - noise_pred_uncond)
            latents = sched.step(noise_pred, k, latents).prev_sample
            theirs.append(latents)

    sde = sd.DiscreteVPSDE(alphas_cumprod=sched.alphas_cumprod, t_min=0.0)
    grid = torch.cat([sde.timestep_to_t(sched.timesteps.double()), torch.zeros(1, dtype=F64)])
    net = Calls(unet)
    guided = ScoreModel(net, sde).guided(w, uncond)
    ours = []
    sd.sample(
        sde, guided, x_T=x.clone(), solver=sd.DDIM(), grid=grid, model_kwargs=cond,
        callback=lambda d: ours.append(d["x"].clone()),
    )  # fmt: skip
    assert net.batches == [2 * B] * steps and guided.nfe == steps
    for i, (a, b) in enumerate(zip(ours, theirs)):
        err = float((a - b).abs().max()) / max(1.0, float(b.abs().max()))
        assert err < 1e-12, f"step {i}: relative difference {err:.3g}"


@pytest.mark.parametrize("pred", PREDICTIONS)
@pytest.mark.parametrize("w", [0.0, 1.0, 2.5, -0.5])
def test_guided_views_are_the_guided_combination_in_every_parameterization(pred, w):
    """guided.view = uncond.view + w (cond.view - uncond.view) for every view: guiding in the network's own
    parameterization commutes with the (affine) conversions, so eps, x0, v and score guidance agree."""
    sde = sd.VPSDE()
    cond_kw = {"class_labels": torch.tensor([1, 2, 3, 1]), "scale": 1.5}
    uncond_kw = {"class_labels": torch.tensor([0])}
    base = ScoreModel(_smooth, sde, prediction=pred, time_input=_identity, model_kwargs=cond_kw)
    guided = base.guided(w, uncond_kw)
    cond, uncond = base, base.with_kwargs(**uncond_kw)
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(7), dtype=F64)
    t = torch.tensor([0.05, 0.3, 0.7, 0.95], dtype=F64)
    for view in PREDICTIONS:
        c, u = cond.predict(x, t, view), uncond.predict(x, t, view)
        torch.testing.assert_close(guided.predict(x, t, view), u + w * (c - u), rtol=1e-12, atol=1e-12)
    # the raw output is guided in the network's own parameterization, then converted exactly
    a, s = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
    raw = guided(x, t)
    torch.testing.assert_close(guided.eps(x, t), convert(raw, x, a, s, pred, "eps"), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize(
    "solver", [sd.DDIM(), sd.ODE("heun"), sd.PLMS(), sd.EulerMaruyama(), sd.PredictorCorrector()], ids=repr
)
def test_guidance_costs_one_network_call_per_evaluation(solver):
    sde = sd.VPSDE()
    net = Calls(lambda x, t, class_labels: 0.5 * torch.tanh(x) + 0.1 * class_labels[:, None].to(x.dtype))
    guided = ScoreModel(net, sde, time_input=_identity).guided(3.0, {"class_labels": torch.tensor([0])})
    B, steps = 5, 6
    sd.sample(
        sde, guided, (B, 2), solver=solver, steps=steps, generator=torch.Generator().manual_seed(0),
        model_kwargs={"class_labels": torch.arange(1, B + 1)},
    )  # fmt: skip
    assert net.batches == [2 * B] * solver.nfe(steps) and guided.nfe == solver.nfe(steps)


def test_guided_inputs_shared_or_per_sample_give_the_same_model():
    """A null label given once (1 row) or per sample (B rows) builds the same 2B batch; select splits both halves."""
    sde = sd.VPSDE()
    model, _, _ = _class_model(sde, 3, model_kwargs={"class_labels": torch.tensor([0, 1, 2, 1])})
    one = model.guided(2.0, {"class_labels": torch.tensor([1])})
    per = model.guided(2.0, {"class_labels": torch.tensor([1, 1, 1, 1])})
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    assert torch.equal(one.eps(x, 0.4), per.eps(x, 0.4))
    whole = sd.sample(sde, per, x_T=x, solver=sd.DDIM(), steps=5)
    for idx in ([0, 3], [1, 2]):
        for m in (one.select(idx), per.select(idx)):
            assert isinstance(m, GuidedModel) and m.guidance_scale == 2.0
            part = sd.sample(sde, m, x_T=x[idx], solver=sd.DDIM(), steps=5)
            torch.testing.assert_close(part, whole[idx], rtol=1e-13, atol=1e-13)
    assert one.nfe == model.nfe  # guided copies count on the conditional model


@pytest.mark.parametrize("D", [2, 4, 16, 64])
def test_guiding_equal_variance_gaussians_samples_the_gaussian_at_the_guided_mean(D):
    """An exact closed form of guidance: classes N(mu_c, diag(s^2)) of one variance have scores
    -(x - alpha mu_c) / v with the same v(t), so the guided score (1 - w) s_null + w s_c is the score of
    N((1 - w) mu_null + w mu_c, diag(s^2)). Guided DDIM is then the exact model of that Gaussian (a
    deterministic map of x_T, to round-off), and guided Euler-Maruyama samples follow its exact chain law."""
    sde, w, n = sd.VPSDE(), 3.0, 400
    means, stds = _class_laws(D)
    stds = stds[:1].expand_as(stds)  # one variance for every class
    null = 2  # class 2 plays the unconditional model
    model = ScoreModel(ClassGaussians(sde, means, stds), sde, prediction="eps", time_input=_identity)
    guided = model.guided(w, {"class_labels": torch.tensor([null])})
    targets = [sd.Gaussian((1 - w) * means[null] + w * means[c], stds[0]) for c in (0, 1)]
    labels = torch.tensor([0, 1]).repeat_interleave(n)
    kw = {"class_labels": labels}
    # DDIM: the same map of x_T as the exact model of the guided Gaussian
    x_T = torch.randn(2 * n, D, generator=torch.Generator().manual_seed(D), dtype=F64)
    x = sd.sample(sde, guided, x_T=x_T, solver=sd.DDIM(), steps=10, model_kwargs=kw)
    for c, target in enumerate(targets):
        rows = labels == c
        ref = sd.sample(sde, target.model(sde), x_T=x_T[rows], solver=sd.DDIM(), steps=10)
        torch.testing.assert_close(x[rows], ref, rtol=1e-10, atol=1e-10)
    # Euler-Maruyama: each class's samples follow the exact chain law of its guided Gaussian
    grid = sd.grids.uniform(sde, 25)
    gen = torch.Generator().manual_seed(100 + D)
    x = sd.sample(
        sde, guided, (2 * n, D), solver=sd.EulerMaruyama(), grid=grid, dtype=F64, generator=gen, model_kwargs=kw
    )
    for c, target in enumerate(targets):
        ones = torch.ones(D, dtype=F64)
        mean, var = chain_moments(sd.EulerMaruyama(), sde, target.model(sde), grid, 0 * ones, ones)
        check_moments(x[labels == c], mean, var, what=f"guided class {c}, D={D}")


class _Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.__name__.split(".")[0])
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    "solver", [sd.DDIM(), sd.PLMS(), sd.EulerMaruyama(), sd.ODE("heun"), sd.DPMSolverPP()], ids=repr
)
@pytest.mark.parametrize("pred", PREDICTIONS)
def test_a_guided_step_keeps_the_fast_path(solver, pred):
    """Guided steps with bound per-sample labels, on DiscreteVPSDE (alpha(t) is a gather of knots): no process
    evaluation inside a step (alpha, sigma come precomputed through view_at), one network call per evaluation."""
    from sdesolve.solvers.base import _to_device

    sde = sd.DiscreteVPSDE.from_schedule("linear", 1000)
    net = Calls(lambda x, t, class_labels: 0.1 * x + 0.01 * class_labels.to(x.dtype)[:, None])
    model = ScoreModel(net, sde, prediction=pred, model_kwargs={"class_labels": torch.arange(1, 5)})
    guided = model.guided(2.0, {"class_labels": torch.tensor([0])})
    x = torch.randn(4, 3)
    coefs = _to_device(solver.init(sde, sd.grids.uniform(sde, 8)), x)
    state, names = solver.init_state(x, coefs), set()
    for i in range(4):
        with _Ops() as ops:
            state = solver.step(guided, state, i, coefs, generator=torch.Generator().manual_seed(i))
        names |= set(ops.names)
    process_ops = {"exp", "log", "expm1", "log1p", "index", "searchsorted", "gather", "bucketize", "floor"}
    assert not process_ops & names, names
    assert net.batches == [8] * guided.nfe and guided.nfe == solver.nfe(4)


def test_guided_model_serves_every_batch_size_and_equal_shared_values():
    """The 2B inputs are rebuilt for a new batch size; shared values equal in both halves (not the same object) pass."""
    sde = sd.VPSDE()
    seen = []

    def net(x, t, class_labels, scale):
        seen.append((class_labels.clone(), scale))
        return _smooth(x, t, class_labels, scale)

    base = ScoreModel(net, sde, time_input=_identity, model_kwargs={"class_labels": torch.tensor([2]), "scale": 1.5})
    guided = base.guided(2.0, {"class_labels": torch.tensor([0]), "scale": float("1.5")})
    for B in (2, 3, 2):
        x = torch.randn(B, 4, generator=torch.Generator().manual_seed(B), dtype=F64)
        c = base.x0(x, 0.3)
        u = base.with_kwargs(class_labels=torch.tensor([0])).x0(x, 0.3)
        torch.testing.assert_close(guided.x0(x, 0.3), u + 2.0 * (c - u), rtol=1e-13, atol=1e-13)
        labels, scale = seen[-1]
        assert labels.tolist() == [0] * B + [2] * B and scale == 1.5


def test_guidance_scale_one_and_zero_are_the_conditional_and_unconditional_models():
    sde = sd.VPSDE()
    base = ScoreModel(_smooth, sde, time_input=_identity, model_kwargs={"class_labels": torch.tensor([2, 3])})
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(4), dtype=F64)
    uncond_kw = {"class_labels": torch.tensor([0])}
    torch.testing.assert_close(base.guided(1.0, uncond_kw).x0(x, 0.5), base.x0(x, 0.5), rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(
        base.guided(0.0, uncond_kw).x0(x, 0.5), base.with_kwargs(**uncond_kw).x0(x, 0.5), rtol=1e-14, atol=1e-14
    )


# ----------------------------------------------------------------------------- the worked example
def test_conditional_unet_example_runs(capsys, monkeypatch):
    pytest.importorskip("diffusers")
    monkeypatch.setattr(sys, "argv", ["conditional_unet.py", "--train-steps", "1", "--steps", "2", "-n", "4"])
    runpy.run_path(str(ROOT / "examples" / "conditional_unet.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "unconditional" in out and "guidance" in out


# ----------------------------------------------------------------------------- on a CUDA device
def _cuda_class_setup(B=8, D=4):
    sde = sd.VPSDE()
    model, _, _ = _class_model(sde, D)
    model = model.to("cuda")
    labels = (torch.arange(B) % 3).to("cuda")
    guided = model.guided(2.0, {"class_labels": torch.tensor([0], device="cuda")})
    x_T = torch.randn(B, D, generator=torch.Generator().manual_seed(0)).to("cuda")
    return sde, model, guided, labels, x_T


@pytest.mark.gpu
@pytest.mark.parametrize("solver", [sd.DDIM(), sd.EulerMaruyama(), sd.DPMSolverPP(), sd.PLMS()], ids=repr)
def test_guided_sampling_with_kwargs_does_not_synchronize(solver):
    """Per-sample inputs and the 2B guided call add no host-device synchronization to a fixed-step solve."""
    sde, _, guided, labels, x_T = _cuda_class_setup()
    gen = torch.Generator(device="cuda").manual_seed(0)
    bound = guided.with_kwargs(class_labels=labels)  # the conditional labels, per sample
    bound.eps(x_T, 0.5)  # the 2B inputs are built at the first evaluation (shapes only), then reused
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        x = sd.sample(sde, bound, x_T=x_T, solver=solver, steps=10, generator=gen, check_finite=False)
        # through sample(model_kwargs=): a fresh bound copy builds its 2B inputs inside the solve
        y = sd.sample(
            sde, guided, x_T=x_T, solver=solver, steps=10, generator=torch.Generator(device="cuda").manual_seed(0),
            check_finite=False, model_kwargs={"class_labels": labels},
        )  # fmt: skip
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert x.is_cuda and bool(torch.isfinite(x).all())
    torch.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.mark.gpu
def test_guided_graph_sampler_replays_the_eager_solve():
    """A GuidedModel with bound per-sample labels captured in a CUDA graph gives the eager samples (and the CPU's)."""
    sde, model, guided, labels, x_T = _cuda_class_setup()
    kw = {"class_labels": labels}
    gs = sd.GraphSampler(sde, guided, tuple(x_T.shape), solver=sd.DDIM(), steps=10, device="cuda", model_kwargs=kw)
    assert gs.use_graph and gs.nfe == 10
    nfe0 = guided.nfe
    got = gs(x_T)
    assert guided.nfe == nfe0 + 10
    eager = sd.sample(sde, guided, x_T=x_T, solver=sd.DDIM(), steps=10, model_kwargs=kw)
    torch.testing.assert_close(got, eager, rtol=1e-5, atol=1e-5)
    cpu_model = model.to("cpu").guided(2.0, {"class_labels": torch.tensor([0])})
    cpu = sd.sample(
        sde, cpu_model, x_T=x_T.cpu(), solver=sd.DDIM(), steps=10, model_kwargs={"class_labels": labels.cpu()}
    )
    torch.testing.assert_close(got.cpu(), cpu, rtol=1e-4, atol=1e-4)
