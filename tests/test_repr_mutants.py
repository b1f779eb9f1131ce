"""The repr texts that a mutation run found untested (issue 14), for modules whose test files are
another session's: ``ScoreModel.extra_repr`` (model.py) and the base ``Predictor``/``Corrector``
reprs a user's own predictor or corrector inherits (solvers/predictor_corrector.py)."""

from __future__ import annotations

import torch

import sdesolve as sd
from sdesolve.solvers.predictor_corrector import Corrector, Predictor


def _net(x, t):
    return x


def test_score_model_repr_names_prediction_and_time_dtype_only_when_given():
    sde = sd.VPSDE()
    assert sd.ScoreModel(_net, sde).extra_repr() == "prediction='eps'"
    assert sd.ScoreModel(_net, sde, prediction="v").extra_repr() == "prediction='v'"
    given = sd.ScoreModel(_net, sde, time_dtype=torch.float64)
    assert given.extra_repr() == "prediction='eps', time_dtype=torch.float64"
    assert repr(given).startswith("ScoreModel(\n  prediction='eps', time_dtype=torch.float64\n")


def test_a_users_predictor_and_corrector_inherit_readable_reprs():
    class MyPredictor(Predictor):
        pass

    class MyCorrector(Corrector):
        pass

    assert repr(MyPredictor()) == "MyPredictor(probability_flow=False)"
    assert repr(MyPredictor(probability_flow=True)) == "MyPredictor(probability_flow=True)"
    assert repr(MyCorrector(0.075, 3)) == "MyCorrector(snr=0.075, n_steps=3)"


def _net_kw(x, t, **kwargs):
    return x


def test_score_model_repr_lists_bound_inputs_after_the_time_dtype_and_guidance_after_them():
    sde = sd.VPSDE()
    m = sd.ScoreModel(_net_kw, sde, time_dtype=torch.float64, model_kwargs={"y": torch.zeros(2), "emb": 1.0})
    assert m.extra_repr() == "prediction='eps', time_dtype=torch.float64, model_kwargs=['emb', 'y']"
    assert sd.ScoreModel(_net_kw, sde, model_kwargs={"y": 0}).extra_repr() == "prediction='eps', model_kwargs=['y']"
    g = sd.ScoreModel(_net_kw, sde, prediction="v", model_kwargs={"y": 1}).guided(7.5, {"y": 0})
    assert g.extra_repr() == "prediction='v', model_kwargs=['y'], guidance_scale=7.5, uncond_kwargs=['y']"
