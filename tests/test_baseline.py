"""The control arm: a paired bootstrap of the distillation gain, the baseline student trained on
labels alone from the distilled student's start and batches, its report fields and its gate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgekd.stats import accuracy_gain, paired_bootstrap


def test_identical_predictions_gain_nothing_with_certainty() -> None:
    hits = np.random.default_rng(1).random(500) < 0.8
    gain = accuracy_gain(hits, hits)
    assert gain["gain_pt"] == 0.0 and gain["ci_pt"] == [0.0, 0.0]
    assert gain["only_model_correct"] == gain["only_reference_correct"] == 0
    assert gain["model_accuracy"] == gain["reference_accuracy"] == hits.mean()
    assert gain["samples"] == 500 and gain["resamples"] == 2000 and gain["confidence"] == 0.95


def test_interval_matches_the_normal_approximation_on_a_large_sample() -> None:
    # 4,000 paired samples: model alone right on 400, reference alone right on 200
    n, wins, losses = 4000, 400, 200
    a = np.zeros(n, bool)
    b = np.zeros(n, bool)
    a[:wins] = True
    b[wins : wins + losses] = True
    a[-1000:] = b[-1000:] = True  # both right: cancels out of the difference
    ci = paired_bootstrap(a, b, resamples=4000, seed=3)
    mean = (wins - losses) / n
    se = math.sqrt(((wins + losses) / n - mean**2) / n)  # sd of d in {-1, 0, 1}, over sqrt(n)
    assert ci.estimate == pytest.approx(mean)
    half = 1.959964 * se
    assert ci.low == pytest.approx(mean - half, abs=0.1 * half)
    assert ci.high == pytest.approx(mean + half, abs=0.1 * half)


def test_bootstrap_is_seeded_and_checks_its_arguments() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random(300) < 0.7, rng.random(300) < 0.6
    assert paired_bootstrap(a, b, seed=5) == paired_bootstrap(a, b, seed=5)
    assert paired_bootstrap(a, b, seed=5) != paired_bootstrap(a, b, seed=6)
    with pytest.raises(ValueError):
        paired_bootstrap(a, b[:-1])
    with pytest.raises(ValueError):
        paired_bootstrap(a, b, confidence=1.0)
