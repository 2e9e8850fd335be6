"""Anti-collapse regularisers on the online encoder's output tokens (``loss.regularizer``).

The V-JEPA 2 objective alone (predict the EMA target's features of masked tokens) has a cheap way
down: features that carry less information are easier to predict. At the paper's scale the EMA
target and the data's variety hold that back; at toy scale the encoder partially collapses (a few
directions carry nearly all the variance, the probe reads no more than from a random encoder).
A regulariser on the distribution of the online encoder's tokens makes collapse cost something:

* ``vicreg`` (variance + covariance terms of VICReg, Bardes et al. 2022; C-JEPA, arXiv 2410.19560):
  for tokens ``z`` ``(n, D)`` with per-dimension variance ``v_d`` and covariance matrix ``C``,

      R = mean_d relu(1 - sqrt(v_d + 1e-4))  +  c * sum_{i != j} C_ij^2 / D

  (``c`` = ``loss.vicreg_cov_weight``): every dimension keeps a standard deviation of at least 1
  and the dimensions decorrelate.
* ``sigreg`` (SIGReg of LeJEPA, arXiv 2511.08544): the tokens should look like samples of an
  isotropic Gaussian ``N(0, I)``. By the Cramer-Wold theorem it suffices that every 1-D projection
  does; SIGReg checks ``M`` random unit directions ``a_m`` (fresh each step) with the Epps-Pulley
  statistic, the weighted L2 distance between the empirical characteristic function of the
  projections ``p = z a_m`` and that of ``N(0, 1)``:

      R = mean_m  integral_{-t_max}^{t_max} |mean_k exp(i t p_k) - exp(-t^2/2)|^2 exp(-t^2/2) dt

  by the trapezoid rule on ``loss.sigreg_knots`` points of ``[0, t_max]`` (the integrand is even).
  It is 0 for Gaussian tokens (up to an O(1/n) sampling term) and near its maximum for collapsed
  ones. Unlike LeJEPA's test statistic it is not multiplied by ``n``, so the weight does not depend
  on the batch size.

The objective adds ``loss.regularizer_weight * R``. Statistics are taken over all tokens of the
batch (``B * N`` rows) and, under ``torchrun``, over every process's tokens (sums all-reduced with
autograd), so a run's regulariser does not depend on how many processes share its batch. With
gradient accumulation they are taken per micro-batch (over all processes).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vjepa2.engine import distributed as dist_utils


def _global_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over the processes (autograd-aware); ``x`` itself in a single process."""
    return dist_utils.all_reduce_sum_autograd(x)


def vicreg_terms(z: torch.Tensor, eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """``(variance hinge, covariance penalty)`` of tokens ``z`` ``(n, D)`` (see the module docstring).

    Two passes (the global mean, then centred second moments), so that the covariance of tokens
    far from the origin does not lose precision.
    """
    n_local, dim = z.shape
    n = _global_sum(torch.tensor(float(n_local), device=z.device, dtype=z.dtype))
    mean = _global_sum(z.sum(0)) / n
    centred = z - mean
    cov = _global_sum(centred.T @ centred) / (n - 1)                       # (D, D)
    std = torch.sqrt(torch.diagonal(cov) + eps)
    variance = F.relu(1.0 - std).mean()
    off_diagonal = cov - torch.diag_embed(torch.diagonal(cov))
    covariance = off_diagonal.pow(2).sum() / dim
    return variance, covariance


def sigreg_statistic(z: torch.Tensor, directions: torch.Tensor, knots: int = 17, t_max: float = 3.0) -> torch.Tensor:
    """Mean Epps-Pulley distance to ``N(0, 1)`` of the projections of ``z`` ``(n, D)`` on the unit
    columns of ``directions`` ``(D, M)`` (see the module docstring). Scalar, >= 0."""
    n_local = z.shape[0]
    n = _global_sum(torch.tensor(float(n_local), device=z.device, dtype=z.dtype))
    t = torch.linspace(0.0, t_max, knots, device=z.device, dtype=z.dtype)   # (K,)
    angles = (z @ directions).unsqueeze(-1) * t                              # (n, M, K)
    real = _global_sum(torch.cos(angles).sum(0)) / n                         # (M, K)
    imag = _global_sum(torch.sin(angles).sum(0)) / n
    gauss = torch.exp(-0.5 * t * t)
    integrand = ((real - gauss).pow(2) + imag.pow(2)) * gauss                # (M, K)
    # Trapezoid weights on [0, t_max], doubled for [-t_max, 0].
    step = t_max / (knots - 1)
    weights = torch.full((knots,), 2.0 * step, device=z.device, dtype=z.dtype)
    weights[0] = weights[-1] = step
    return (integrand * weights).sum(-1).mean()


def random_directions(dim: int, count: int, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(dim, count)`` columns drawn uniformly on the unit sphere (from ``generator``'s stream)."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    a = torch.randn(dim, count, generator=generator, device=gen_device, dtype=torch.float64)
    return (a / a.norm(dim=0, keepdim=True)).to(device=device, dtype=dtype)


def regularizer_value(kind: str, z: torch.Tensor, *, vicreg_cov_weight: float = 0.02, sigreg_projections: int = 256,
                      sigreg_knots: int = 17, sigreg_t_max: float = 3.0,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """The unweighted regulariser ``R`` of tokens ``z`` ``(..., D)`` (flattened to ``(n, D)``), in at
    least float32 (bf16 autocast outputs are promoted). ``generator`` draws SIGReg's directions: give
    every process the same one, so that all of them test the same projections."""
    z = z.reshape(-1, z.shape[-1])
    z = z if z.dtype == torch.float64 else z.float()
    with torch.autocast(z.device.type, enabled=False):  # second moments and cos/sin of large angles need fp32
        if kind == "vicreg":
            variance, covariance = vicreg_terms(z)
            return variance + vicreg_cov_weight * covariance
        if kind == "sigreg":
            directions = random_directions(z.shape[-1], sigreg_projections, generator, z.device, z.dtype)
            return sigreg_statistic(z, directions, sigreg_knots, sigreg_t_max)
    raise ValueError(f"unknown regularizer {kind!r}; choose none, vicreg or sigreg")


def gaussian_sigreg_floor(n: int, knots: int = 17, t_max: float = 3.0) -> float:
    """Expected :func:`sigreg_statistic` of ``n`` exact ``N(0, 1)`` samples (the sampling term):
    ``integral (1 - exp(-t^2)) / n * exp(-t^2/2) dt``; useful to read a logged value."""
    ts = [t_max * k / (knots - 1) for k in range(knots)]
    step = t_max / (knots - 1)
    vals = [(1 - math.exp(-t * t)) / n * math.exp(-0.5 * t * t) for t in ts]
    return 2 * step * (sum(vals) - 0.5 * (vals[0] + vals[-1]))
