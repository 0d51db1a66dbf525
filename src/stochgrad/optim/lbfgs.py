"""Limited-memory BFGS directions from pairs (s, y) of steps and gradient differences (Nocedal and Wright 2006,
Algorithm 7.4), for gradients that are estimates: pairs that break the curvature condition are not stored."""

from __future__ import annotations

import torch
from torch import Tensor


class LBFGSMemory:
    """The last ``size`` pairs (s_k, y_k) and the inverse-Hessian approximation they define.

    ``direction(g)`` is −H·g by the two-loop recursion with H_0 = γI, γ = s·y / y·y of the newest pair (or the
    ``gamma0`` given while the memory is empty).
    """

    def __init__(self, size: int = 10) -> None:
        self.size = size
        self.s: list[Tensor] = []
        self.y: list[Tensor] = []

    def __len__(self) -> int:
        return len(self.s)

    def clear(self) -> None:
        self.s.clear()
        self.y.clear()

    def add(self, s: Tensor, y: Tensor, eps: float = 1e-10) -> bool:
        """Store (s, y) if s·y > eps·‖s‖‖y‖ (positive curvature along s, which keeps H positive definite);
        returns whether it was stored."""
        sy = float(s @ y)
        if not sy > eps * float(s.norm() * y.norm()):
            return False
        self.s.append(s.clone())
        self.y.append(y.clone())
        if len(self.s) > self.size:
            self.s.pop(0)
            self.y.pop(0)
        return True

    def gamma(self) -> float | None:
        if not self.s:
            return None
        return float(self.s[-1] @ self.y[-1]) / float(self.y[-1] @ self.y[-1])

    def direction(self, g: Tensor, gamma0: float) -> Tensor:
        """−H·g, ``[D]``."""
        q = g.clone()
        alphas = []
        for s, y in zip(reversed(self.s), reversed(self.y)):
            a = float(s @ q) / float(y @ s)
            q -= a * y
            alphas.append(a)
        gamma = self.gamma()
        r = q * (gamma0 if gamma is None else gamma)
        for (s, y), a in zip(zip(self.s, self.y), reversed(alphas)):
            b = float(y @ r) / float(y @ s)
            r += (a - b) * s
        return -r

    def state_dict(self) -> dict:
        return {"size": self.size, "s": [s.clone() for s in self.s], "y": [y.clone() for y in self.y]}

    def load_state_dict(self, state: dict) -> None:
        self.size = int(state["size"])
        self.s = [s.clone() for s in state["s"]]
        self.y = [y.clone() for y in state["y"]]


def as_matrix(memory: LBFGSMemory, dim: int, gamma0: float, dtype: torch.dtype = torch.float64) -> Tensor:
    """H as a dense ``[D, D]`` matrix (for tests and diagnostics)."""
    eye = torch.eye(dim, dtype=dtype)
    return torch.stack([-memory.direction(eye[i], gamma0) for i in range(dim)], dim=1)
