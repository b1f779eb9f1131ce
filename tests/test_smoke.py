import torch

import sdesolve as sd


def test_em_samples_gaussian_vp():
    target = sd.Gaussian(torch.tensor([1.0, -2.0]), torch.tensor([0.5, 2.0]))
    sde = sd.VPSDE()
    gen = torch.Generator().manual_seed(0)
    x = sd.sample(
        sde, target.model(sde), (4000, 2), solver=sd.EulerMaruyama(), steps=200, generator=gen, dtype=torch.float64
    )
    # standard errors: mean 0.5/sqrt(4000)=0.008, 2/sqrt(4000)=0.03
    assert torch.allclose(x.mean(0), target.mean, atol=0.15)
    assert torch.allclose(x.std(0), target.std, rtol=0.08)


def test_public_api_is_complete():
    """Every name in __all__ exists, once; the solver protocol's pieces are public for users' own solvers."""
    import sdesolve.solvers as solvers

    for mod in (sd, solvers):
        assert len(mod.__all__) == len(set(mod.__all__))
        missing = [n for n in mod.__all__ if not hasattr(mod, n)]
        assert not missing, missing
    for name in ("Solver", "Predictor", "Corrector", "AdaptiveSolveError", "NonFiniteError", "view_at"):
        assert name in sd.__all__
