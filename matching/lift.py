"""Lift of a joint offer from released figures: a two-proportion z-test with noise in the
variance (DESIGN.md "Offer measurement").

Inputs are what the privacy rules released for one side: the treated and control arms'
``people`` (n) and ``responders`` (x), each possibly noised by a discrete Laplace draw whose
variance is known from its scale. Nothing here sees a true count.

Method (stated in every answer, :data:`METHOD`):

* response rates ``p = x / n`` (clamped to [0, 1]: post-processing of released values);
* absolute lift ``d = p_t - p_c`` with a 95 % Wald interval whose variance is, per arm,
  ``p(1 - p)/n`` (sampling) plus ``(Var x + p² Var n)/n²`` (the noise, by the delta method of
  ``x/n``), so with epsilon the interval is wider by exactly what the noise adds;
* relative lift ``d / p_c`` with a delta-method interval (``Var p_t/p_c² + p_t² Var p_c/p_c⁴``);
* two-sided p-value of the z-test of ``p_t = p_c`` with the pooled rate under the null (plus
  the same noise terms): ``erfc(|z|/√2)``.

Pure: the standard library only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["METHOD", "Lift", "discrete_laplace_variance", "two_proportion_lift"]

METHOD = (
    "two-proportion z-test on the released (suppressed, noised) counts: Wald 95% interval "
    "for the difference of response rates with the noise variance added (delta method), "
    "delta-method interval for the relative lift, two-sided p-value with the pooled rate"
)
Z_95 = 1.959963984540054  # the standard normal's 97.5 % quantile


@dataclass(frozen=True, slots=True)
class Lift:
    absolute: float
    absolute_ci: tuple[float, float]
    relative: float | None  # None when the control rate is 0
    relative_ci: tuple[float, float] | None
    p_value: float
    standard_error: float  # of the absolute lift, noise included


def discrete_laplace_variance(scale: float) -> float:
    """Variance of the discrete Laplace distribution of ``scale`` (0 for no noise):
    ``2a/(1 - a)²`` with ``a = exp(-1/scale)``."""
    if scale <= 0:
        return 0.0
    a = math.exp(-1.0 / scale)
    return 2.0 * a / (1.0 - a) ** 2


def _rate(responders: float, people: float) -> float:
    return min(1.0, max(0.0, responders / people))


def _noise_term(rate: float, people: float, var_responders: float, var_people: float) -> float:
    return (var_responders + rate * rate * var_people) / (people * people)


def two_proportion_lift(
    treated_responders: float,
    treated_people: float,
    control_responders: float,
    control_people: float,
    *,
    responders_variance: float = 0.0,
    people_variance: float = 0.0,
) -> Lift:
    """The lift of the treated arm over the control arm (see the module docstring).

    ``responders_variance`` and ``people_variance`` are the variances of the noise added to
    each released responders and people count (0 without noise).
    """
    if treated_people <= 0 or control_people <= 0:
        raise ValueError("both arms need people")
    n_t, n_c = float(treated_people), float(control_people)
    p_t = _rate(treated_responders, n_t)
    p_c = _rate(control_responders, n_c)
    noise_t = _noise_term(p_t, n_t, responders_variance, people_variance)
    noise_c = _noise_term(p_c, n_c, responders_variance, people_variance)
    var_t = p_t * (1 - p_t) / n_t + noise_t
    var_c = p_c * (1 - p_c) / n_c + noise_c
    difference = p_t - p_c
    se = math.sqrt(var_t + var_c)
    absolute_ci = (difference - Z_95 * se, difference + Z_95 * se)
    relative: float | None = None
    relative_ci: tuple[float, float] | None = None
    if p_c > 0:
        relative = difference / p_c
        rel_se = math.sqrt(var_t / p_c**2 + p_t**2 * var_c / p_c**4)
        relative_ci = (relative - Z_95 * rel_se, relative + Z_95 * rel_se)
    pooled = _rate(p_t * n_t + p_c * n_c, n_t + n_c)
    null_se = math.sqrt(
        pooled * (1 - pooled) * (1 / n_t + 1 / n_c)
        + _noise_term(pooled, n_t, responders_variance, people_variance)
        + _noise_term(pooled, n_c, responders_variance, people_variance)
    )
    if null_se == 0:
        p_value = 1.0 if difference == 0 else 0.0
    else:
        p_value = math.erfc(abs(difference) / null_se / math.sqrt(2))
    return Lift(difference, absolute_ci, relative, relative_ci, p_value, se)
