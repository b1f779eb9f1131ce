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
