"""Bad input to the predictor–corrector samplers: every constructor argument of PredictorCorrector, its
predictors and correctors, and the coefficient names of a user subclass."""

from __future__ import annotations

import numpy as np
import torch

import sdesolve as sd
from sdesolve.solvers.predictor_corrector import (
    AncestralPredictor,
    AnnealedLangevinCorrector,
    Corrector,
    EulerMaruyamaPredictor,
    LangevinCorrector,
    PredictorCorrector,
    ReverseDiffusionPredictor,
)

from . import Case


class _BadKeys(Corrector):
    def init(self, sde, grid):
        return {"eps": torch.zeros(grid.numel() - 1, dtype=torch.float64)}

    def __call__(self, model, x, i, c, *, generator=None):
        return x


def _sample_with(solver, sde=None):
    sde = sde or sd.SubVPSDE()
    return sd.sample(sde, lambda x, t: -x, (2, 3), solver=solver, steps=3)


CASES = [
    # PredictorCorrector(predictor, corrector)
    Case(
        "pc-predictor-string",
        lambda: PredictorCorrector("reverse_diffusion"),
        TypeError,
        r"predictor must be a Predictor.*got str",
    ),
    Case(
        "pc-predictor-class",
        lambda: PredictorCorrector(ReverseDiffusionPredictor),
        TypeError,
        r"predictor must be a Predictor.*got type",
    ),
    Case(
        "pc-predictor-corrector-swapped",
        lambda: PredictorCorrector(LangevinCorrector()),
        TypeError,
        r"predictor must be a Predictor.*LangevinCorrector",
    ),
    Case(
        "pc-corrector-string",
        lambda: PredictorCorrector(None, "langevin"),
        TypeError,
        r"corrector must be a Corrector.*or None, got str",
    ),
    Case(
        "pc-corrector-predictor",
        lambda: PredictorCorrector(None, EulerMaruyamaPredictor()),
        TypeError,
        r"corrector must be a Corrector.*EulerMaruyamaPredictor",
    ),
    Case(
        "pc-corrector-keys",
        lambda: PredictorCorrector(None, _BadKeys(0.1, 1)).init(sd.VPSDE(), sd.grids.uniform(sd.VPSDE(), 3)),
        ValueError,
        r"corrector's coefficient names must start with 'c_'.*'eps'",
    ),
    Case(
        "pc-ancestral-subvp",
        lambda: _sample_with(PredictorCorrector(AncestralPredictor(), None)),
        ValueError,
        r"AncestralPredictor applies to variance-preserving.*SubVPSDE is neither",
    ),
    # predictors: probability_flow, discretization
    Case(
        "pc-rd-probability-flow-string",
        lambda: ReverseDiffusionPredictor(probability_flow="yes"),
        TypeError,
        r"probability_flow must be True or False, got 'yes'",
    ),
    Case(
        "pc-em-probability-flow-int",
        lambda: EulerMaruyamaPredictor(probability_flow=1),
        TypeError,
        r"probability_flow must be True or False, got 1",
    ),
    Case(
        "pc-rd-discretization-value",
        lambda: ReverseDiffusionPredictor(discretization="start"),
        ValueError,
        r"discretization must be one of \('midpoint', 'song'\), got 'start'",
    ),
    Case(
        "pc-em-discretization-type",
        lambda: EulerMaruyamaPredictor(discretization=1),
        TypeError,
        r"discretization must be one of \('auto', 'midpoint', 'song', 'sliding', 'score_sde'\), got 1",
    ),
    Case(
        "pc-em-discretization-value",
        lambda: EulerMaruyamaPredictor(discretization="scoresde"),
        ValueError,
        r"discretization must be one of \('auto', 'midpoint', 'song', 'sliding', 'score_sde'\), got 'scoresde'",
    ),
    Case(
        "pc-rd-discretization-score-sde",
        lambda: ReverseDiffusionPredictor(discretization="score_sde"),
        ValueError,
        r"discretization must be one of \('midpoint', 'song'\), got 'score_sde'",
    ),
    Case(
        "pc-ancestral-discretization-value",
        lambda: AncestralPredictor(discretization="exact"),
        ValueError,
        r"discretization must be one of \('auto', 'midpoint', 'song'\), got 'exact'",
    ),
    Case(
        "pc-ancestral-probability-flow",
        lambda: AncestralPredictor(probability_flow=True),
        TypeError,
        r"unexpected keyword argument 'probability_flow'",
    ),
    # correctors: snr, n_steps, step_rule
    Case(
        "pc-langevin-snr-negative",
        lambda: LangevinCorrector(snr=-0.16),
        ValueError,
        r"snr must be a finite positive number, got -0.16",
    ),
    Case(
        "pc-langevin-snr-zero",
        lambda: LangevinCorrector(snr=0.0),
        ValueError,
        r"snr must be a finite positive number, got 0.0",
    ),
    Case(
        "pc-langevin-snr-nan",
        lambda: LangevinCorrector(snr=float("nan")),
        ValueError,
        r"snr must be a finite positive number, got nan",
    ),
    Case(
        "pc-langevin-snr-inf",
        lambda: LangevinCorrector(snr=np.float32("inf")),
        ValueError,
        r"snr must be a finite positive number",
    ),
    Case(
        "pc-langevin-snr-string",
        lambda: LangevinCorrector(snr="0.16"),
        TypeError,
        r"snr must be a real number, got '0.16' \(str\)",
    ),
    Case(
        "pc-langevin-snr-bool",
        lambda: LangevinCorrector(snr=True),
        TypeError,
        r"snr must be a real number, got True \(bool\)",
    ),
    Case(
        "pc-langevin-snr-tensor",
        lambda: LangevinCorrector(snr=torch.ones(2)),
        TypeError,
        r"snr must be a real number, got a tensor of shape \(2,\)",
    ),
    Case(
        "pc-langevin-n-steps-zero",
        lambda: LangevinCorrector(n_steps=0),
        ValueError,
        r"n_steps must be an int >= 1, got 0",
    ),
    Case(
        "pc-langevin-n-steps-float",
        lambda: LangevinCorrector(n_steps=2.0),
        TypeError,
        r"n_steps must be an int, got 2.0 \(float\)",
    ),
    Case(
        "pc-langevin-n-steps-numpy-negative",
        lambda: LangevinCorrector(n_steps=np.int64(-1)),
        ValueError,
        r"n_steps must be an int >= 1, got -1",
    ),
    Case(
        "pc-langevin-step-rule-value",
        lambda: LangevinCorrector(step_rule="mean"),
        ValueError,
        r"step_rule must be one of \('sigma', 'batch', 'sample'\), got 'mean'",
    ),
    Case(
        "pc-langevin-step-rule-type",
        lambda: LangevinCorrector(step_rule=None),
        TypeError,
        r"step_rule must be one of \('sigma', 'batch', 'sample'\), got None",
    ),
    Case(
        "pc-langevin-metropolis-string",
        lambda: LangevinCorrector(metropolis="yes"),
        TypeError,
        r"metropolis must be True or False, got 'yes' \(str\)",
    ),
    Case(
        "pc-langevin-metropolis-int",
        lambda: LangevinCorrector(metropolis=1),
        TypeError,
        r"metropolis must be True or False, got 1 \(int\)",
    ),
    Case(
        "pc-langevin-metropolis-with-batch-rule",
        lambda: LangevinCorrector(step_rule="batch", metropolis=True),
        ValueError,
        r"metropolis=True needs step_rule='sigma' \(a step that depends on t alone\); got step_rule='batch'",
    ),
    Case(
        "pc-langevin-metropolis-with-sample-rule",
        lambda: LangevinCorrector(step_rule="sample", metropolis=True),
        ValueError,
        r"metropolis=True needs step_rule='sigma'.*got step_rule='sample'",
    ),
    Case(
        "pc-annealed-snr-missing",
        lambda: AnnealedLangevinCorrector(),
        TypeError,
        r"missing 2 required positional arguments: 'snr' and 'n_steps'",
    ),
    Case(
        "pc-annealed-snr-negative",
        lambda: AnnealedLangevinCorrector(-1.0, 1),
        ValueError,
        r"snr must be a finite positive number, got -1.0",
    ),
    Case(
        "pc-annealed-n-steps-float",
        lambda: AnnealedLangevinCorrector(0.1, 1.5),
        TypeError,
        r"n_steps must be an int, got 1.5 \(float\)",
    ),
    # PredictorCorrector.nfe(n_steps, sde)
    Case(
        "pc-nfe-needs-sde",
        lambda: PredictorCorrector(EulerMaruyamaPredictor(), LangevinCorrector()).nfe(10),
        ValueError,
        r"sde is needed: whether EulerMaruyamaPredictor\(.*discretization='auto'\) reuses .* depends on the process",
    ),
    Case(
        "pc-nfe-sde-string",
        lambda: PredictorCorrector().nfe(10, "vp"),
        TypeError,
        r"sde must be a linear forward process .*got 'vp' \(str\)",
    ),
    Case(
        "pc-nfe-steps-negative",
        lambda: PredictorCorrector().nfe(-1),
        ValueError,
        r"n_steps must be .*>= 0.*got -1",
    ),
]
