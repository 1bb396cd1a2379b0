"""Tian, Chen & Ganguli 2021's per-mode dynamics of non-contrastive learning, integrated numerically.

Setting: linear online network W, linear predictor W_p, target W_a (an EMA of W, or W itself as
in SimSiam), isotropic data (E[x x^T] = I) and isotropic augmentation (views x + sigma * eps), loss
1/2 E||W_p W x1 - StopGrad(W_a x2)||^2, weight decay eta on W and W_p, predictor learning rate
alpha_p times that of W. When W_p is symmetric and shares its eigenvectors with F = W W^T (what
training drives it to), the gradient flow splits into independent eigen-modes. For one mode with
predictor eigenvalue p, F eigenvalue s and target/online ratio tau (W_a = tau W on that mode),
writing g = p (tau - (1 + sigma^2) p) - eta:

    dp/dt   = alpha_p s (tau - (1 + sigma^2) p) - eta p
    ds/dt   = 2 s g
    dtau/dt = beta (1 - tau) - tau g        (EMA target at rate beta; without EMA tau = 1)

A mode survives (s stays away from 0) only at a root of g = 0,
p = [tau +- sqrt(tau^2 - 4 eta (1 + sigma^2))] / (2 (1 + sigma^2)), so every mode collapses once
eta > tau^2 / (4 (1 + sigma^2)); below that, the initial (p, s, tau) decides which basin a mode is in.

Time is gradient-flow time: SGD with learning rate lr and momentum mu covers lr / (1 - mu) per step,
and an EMA target updated with rate 1 - ema_tau per step follows at beta = (1 - ema_tau)(1 - mu) / lr."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.integrate import solve_ivp


def collapse_threshold(sigma: float, tau: float = 1.0) -> float:
    """The weight decay above which every mode collapses: tau^2 / (4 (1 + sigma^2))."""
    return tau**2 / (4 * (1 + sigma**2))


def fixed_points(eta: float, sigma: float, tau: float = 1.0) -> tuple[float, float] | None:
    """The predictor eigenvalues (p_minus, p_plus) of the non-collapsed fixed points; None above
    the collapse threshold. At p_plus, the stable one, s = p_plus^2 / alpha_p."""
    disc = tau**2 - 4 * eta * (1 + sigma**2)
    if disc < 0:
        return None
    root = math.sqrt(disc)
    return (tau - root) / (2 * (1 + sigma**2)), (tau + root) / (2 * (1 + sigma**2))


def flow_time(steps: int, lr: float, momentum: float = 0.0) -> float:
    """Gradient-flow time covered by `steps` SGD steps."""
    return steps * lr / (1 - momentum)


@dataclass(frozen=True)
class ModeDynamics:
    eta: float
    sigma: float
    alpha_p: float = 1.0
    # Rate beta per unit time at which an EMA target follows W; None: the target is W (tau = 1).
    ema_rate: float | None = None
    # False: no predictor, p stays at its initial value (1 for W_p = I).
    predictor: bool = True

    def derivatives(self, p: np.ndarray, s: np.ndarray, tau: np.ndarray) -> tuple[np.ndarray, ...]:
        shortfall = tau - (1 + self.sigma**2) * p
        g = p * shortfall - self.eta
        dp = self.alpha_p * s * shortfall - self.eta * p if self.predictor else np.zeros_like(p)
        dtau = self.ema_rate * (1 - tau) - tau * g if self.ema_rate is not None else np.zeros_like(tau)
        return dp, 2 * s * g, dtau

    def integrate(self, p0, s0, t_end: float, tau0=1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(p, s, tau) of every mode at time t_end (float64), from per-mode initial values; an
        adaptive Runge-Kutta solver, tolerances far below the scale at which a mode counts as alive."""
        p0, s0, tau0 = np.broadcast_arrays(*(torch.as_tensor(v, dtype=torch.float64).numpy() for v in (p0, s0, tau0)))
        modes = p0.size

        def rhs(_, y: np.ndarray) -> np.ndarray:
            return np.concatenate(self.derivatives(y[:modes], y[modes : 2 * modes], y[2 * modes :]))

        y0 = np.concatenate([p0.ravel(), s0.ravel(), tau0.ravel()])
        y = solve_ivp(rhs, (0.0, t_end), y0, method="LSODA", rtol=1e-8, atol=1e-12).y[:, -1]
        return tuple(torch.from_numpy(part.reshape(p0.shape).copy()) for part in np.split(y, 3))

    def survivors(self, p0, s0, t_end: float, floor: float = 1e-3, tau0=1.0) -> torch.Tensor:
        """Which modes still have s above `floor` at t_end."""
        _, s, _ = self.integrate(p0, s0, t_end, tau0=tau0)
        return s > floor
