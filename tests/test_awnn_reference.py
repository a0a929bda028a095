"""AWNN against an independent slow implementation (float64): importance and its gradient, the
prior, the forward pass and gradients, and whole training runs with widths growing and shrinking.

The reference follows the paper literally: h_ℓ = σ(W_ℓ h_{ℓ−1} + b_ℓ) ⊙ f(·; ν_ℓ) (eq. 14) with
f from `importance` (eq. 12, plain autograd), the prior Σθ²/(2σθ²N) by autograd, Adam written out,
and Algorithm 1's resize on plain tensors, drawing fresh neurons in the documented order.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from experiments.regimes.awnn import AWNNRegime
from experiments.regimes.base import RunContext
from models.awnn import AdaptiveMLP, Importance, importance, theta_penalty
from tests.awnn_steps import plus_penalty
from tests.helpers import per_piece

ACTS = {"relu6": lambda z: z.clamp(0.0, 6.0), "relu": torch.relu, "tanh": torch.tanh}
GAIN = {"relu6": 2.0, "relu": 2.0, "tanh": 25.0 / 9.0}


@pytest.fixture(autouse=True)
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


# --- the importance node ------------------------------------------------------------------------
@pytest.mark.parametrize("convention", ["paper", "authors"])
@pytest.mark.parametrize("nu_min", [0.0, 0.03])
def test_importance_node_matches_reference_and_gradcheck(convention, nu_min):
    raw = torch.tensor([-4.6, -1.0, 0.3, 21.0], requires_grad=True)   # 21 > softplus threshold
    widths = [230, 40, 9, 3]
    positions = [torch.arange(w, dtype=torch.float64) for w in widths]
    out = Importance.apply(raw, nu_min, convention == "authors", positions, [None] * 4)
    weights = [torch.randn(w) for w in widths]
    loss = sum((o * g).sum() for o, g in zip(out, weights))
    (grad,) = torch.autograd.grad(loss, raw)
    ref_raw = raw.detach().clone().requires_grad_(True)
    nus = F.softplus(ref_raw) + nu_min
    ref = [importance(w, nu, convention) for w, nu in zip(widths, nus)]
    ref_loss = sum((o * g).sum() for o, g in zip(ref, weights))
    (ref_grad,) = torch.autograd.grad(ref_loss, ref_raw)
    for o, r in zip(out, ref):
        torch.testing.assert_close(o, r, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-13)
    assert torch.autograd.gradcheck(
        lambda r: Importance.apply(r, nu_min, convention == "authors", positions[:3], [None] * 3),
        (raw.detach()[:3].clone().requires_grad_(True),))


@pytest.mark.parametrize("convention", ["paper", "authors"])
def test_masked_importance_is_each_members_own(convention):
    """Stacked form: raw [S, L], masks [S, C]; member i's values and gradient are those of an
    unmasked call at its own width, and exactly 0 beyond it."""
    raw = torch.tensor([[-3.0], [-1.5], [0.2]], requires_grad=True)
    widths, cap = [50, 7, 20], 64
    j = torch.arange(cap, dtype=torch.float64)
    mask = (j < torch.tensor(widths, dtype=torch.float64)[:, None]).double()
    (out,) = Importance.apply(raw, 0.0, convention == "authors", [j], [mask])
    g = torch.randn(3, cap)
    (grad,) = torch.autograd.grad((out * g).sum(), raw)
    for i, w in enumerate(widths):
        assert out[i, w:].abs().max() == 0
        r = raw.detach()[i].clone().requires_grad_(True)
        (own,) = Importance.apply(r, 0.0, convention == "authors", [j[:w]], [None])
        (own_grad,) = torch.autograd.grad((own * g[i, :w]).sum(), r)
        torch.testing.assert_close(out[i, :w], own, rtol=1e-14, atol=0)
        torch.testing.assert_close(grad[i], own_grad, rtol=1e-12, atol=1e-15)


def test_theta_penalty_matches_autograd():
    params = [torch.randn(5, 3, requires_grad=True), torch.randn(7, requires_grad=True)]
    value = theta_penalty(params, 0.37)
    grads = torch.autograd.grad(value * 1.5, params)
    ref = 0.37 * sum(p.pow(2).sum() for p in params)
    ref_grads = torch.autograd.grad(ref * 1.5, params)
    torch.testing.assert_close(value, ref, rtol=1e-14, atol=0)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-14, atol=0)
    # per-member coefficients (stacks): member i's slice weighted by coef[i]
    coef = torch.tensor([0.1, 2.0])
    stacked = [torch.randn(2, 4, 3, requires_grad=True), torch.randn(2, 4, requires_grad=True)]
    value = theta_penalty(stacked, coef)
    grads = torch.autograd.grad(value, stacked)
    ref = sum(coef[i] * sum(p[i].pow(2).sum() for p in stacked) for i in range(2))
    torch.testing.assert_close(value, ref, rtol=1e-14, atol=0)
    for g, r in zip(grads, torch.autograd.grad(ref, stacked)):
        torch.testing.assert_close(g, r, rtol=1e-14, atol=0)


# --- the slow reference MLP ---------------------------------------------------------------------
class SlowAWNN:
    """Independent AWNN MLP on plain tensors, copied from a model's initial state."""

    def __init__(self, m: AdaptiveMLP, lr: float, betas=(0.9, 0.999), eps=1e-8):
        self.raw = m.raw_nu.detach().clone()
        self.W = [w.detach().clone() for w in m.weight]
        self.b = [b.detach().clone() for b in m.bias]
        self.gen = torch.Generator().manual_seed(0)
        self.gen.set_state(m.generator.get_state())
        self.L, self.k, self.act_name = m.num_hidden, m.k, m.activation_name
        self.convention, self.grow, self.init = m.importance, m.grow_init, m.init
        self.lr, self.betas, self.eps = lr, betas, eps
        self.t = 0
        self.m = [torch.zeros_like(p) for p in self.params()]
        self.v = [torch.zeros_like(p) for p in self.params()]

    def params(self) -> list[torch.Tensor]:
        return [self.raw, *self.W, *self.b]

    @property
    def widths(self) -> list[int]:
        return [w.shape[0] for w in self.W[:-1]]

    def forward(self, x, params):
        raw, W, b = params[0], params[1:self.L + 2], params[self.L + 2:]
        h = x
        for layer in range(self.L):
            f = importance(W[layer].shape[0], F.softplus(raw[layer]), self.convention)
            h = ACTS[self.act_name](h @ W[layer].T + b[layer]) * f          # AWNN eq. 14
        return h @ W[self.L].T + b[self.L]

    def grads(self, x, y, sigma, n):
        params = [p.clone().requires_grad_(True) for p in self.params()]
        loss = F.cross_entropy(self.forward(x, params), y)
        loss = loss + sum(p.pow(2).sum() for p in params[1:]) / (2 * sigma ** 2 * n)
        return torch.autograd.grad(loss, params)

    def adam(self, grads):
        self.t += 1
        b1, b2 = self.betas
        new = []
        for k, (p, g) in enumerate(zip(self.params(), grads)):
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
            m_hat, v_hat = self.m[k] / (1 - b1 ** self.t), self.v[k] / (1 - b2 ** self.t)
            new.append(p - self.lr * m_hat / (v_hat.sqrt() + self.eps))
        self.raw, self.W, self.b = new[0], new[1:self.L + 2], new[self.L + 2:]

    def nus(self) -> list[float]:
        return [math.log1p(math.exp(r)) for r in self.raw.tolist()]

    def update_widths(self):
        target = [int(math.floor(-math.log(1 - self.k) / nu)) + 2 for nu in self.nus()]
        if target != self.widths:
            self.resize(target)

    def std(self, layer, widths):
        gain = GAIN[self.act_name]
        if self.grow == "normal":
            return 1.0
        if layer == 0 or self.init == "kaiming":
            return math.sqrt(gain / (self.W[0].shape[1] if layer == 0 else widths[layer - 1]))
        f = importance(widths[layer - 1], torch.tensor(self.nus()[layer - 1]), self.convention)
        return math.sqrt(gain / f.pow(2).sum().item())

    def draw(self, shape, std):
        return torch.empty(shape).normal_(0.0, std, generator=self.gen)

    def resize(self, widths):
        old = [self.W[0].shape[1], *self.widths, self.W[-1].shape[0]]
        new = [old[0], *widths, old[-1]]
        index = {id(p): k for k, p in enumerate(self.params())}
        for layer in range(self.L + 1):
            (ro, co), (rn, cn) = (old[layer + 1], old[layer]), (new[layer + 1], new[layer])
            if (ro, co) == (rn, cn):
                continue
            rk, ck = min(ro, rn), min(co, cn)
            std = self.std(layer, widths)
            w = torch.zeros(rn, cn)
            w[:rk, :ck] = self.W[layer][:rk, :ck]
            if rn > rk:
                w[rk:, :] = self.draw((rn - rk, cn), std)                  # new rows first
            if cn > ck and rk > 0:
                w[:rk, ck:] = self.draw((rk, cn - ck), std)                # then new columns
            k = index[id(self.W[layer])]
            self.m[k], self.v[k] = (self._cut(s, (rn, cn)) for s in (self.m[k], self.v[k]))
            self.W[layer] = w
            if layer < self.L and rn != ro:
                b = torch.zeros(rn)
                b[:rk] = self.b[layer][:rk]
                if rn > rk and self.grow == "normal":
                    b[rk:] = self.draw((rn - rk,), 1.0)
                k = index[id(self.b[layer])]
                self.m[k], self.v[k] = (self._cut(s, (rn,)) for s in (self.m[k], self.v[k]))
                self.b[layer] = b

    @staticmethod
    def _cut(t, shape):
        out = torch.zeros(shape)
        keep = tuple(slice(0, min(a, b)) for a, b in zip(t.shape, shape))
        out[keep] = t[keep]
        return out


@pytest.mark.parametrize("convention", ["paper", "authors"])
@pytest.mark.parametrize("num_hidden, activation", [(1, "relu6"), (2, "relu"), (3, "tanh")])
def test_forward_and_gradients_match_reference(convention, num_hidden, activation):
    torch.manual_seed(0)
    m = AdaptiveMLP(3, 4, num_hidden, nu0=0.08, activation=activation, importance=convention)
    with torch.no_grad():
        m.raw_nu.add_(torch.linspace(-0.5, 0.5, num_hidden))
        for b in m.bias:
            b.normal_()
    ref = SlowAWNN(m, lr=0.0)
    x, y = torch.randn(16, 3), torch.randint(0, 4, (16,))
    out = m(x)
    torch.testing.assert_close(out, ref.forward(x, ref.params()), rtol=1e-12, atol=1e-14)
    loss = F.cross_entropy(out, y) + theta_penalty(list(m.parameters())[1:], 0.5 / (3.0 ** 2 * 100))
    grads = per_piece(m, torch.autograd.grad(loss, list(m.parameters())))
    for g, r in zip(grads, ref.grads(x, y, 3.0, 100), strict=True):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-13)


def _regime_run(m, opt, regime, batches, nudges):
    ctx = RunContext(model=m, optimizer=opt, data=SimpleNamespace(info={"n_train": 200}),
                     cfg=None, device=torch.device("cpu"))
    regime.before_training(ctx)
    for step, (x, y) in enumerate(batches):
        loss = plus_penalty(F.cross_entropy(m(x), y), regime, ctx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step in nudges:
            with torch.no_grad():
                m.raw_nu.add_(nudges[step])
        regime.after_step(ctx)
        yield m.widths


@pytest.mark.parametrize("convention, grow_init, num_hidden", [
    ("paper", "layer", 1), ("authors", "layer", 2), ("paper", "normal", 2), ("authors", "normal", 1)])
def test_training_matches_reference_through_growth_and_shrink(convention, grow_init, num_hidden):
    """Same outputs, parameters, optimiser state and widths as the slow reference, step by step,
    with widths shrinking and growing (ν nudged at two steps, and moving on its own)."""
    torch.manual_seed(3)
    m = AdaptiveMLP(2, 3, num_hidden, nu0=0.05, importance=convention, grow_init=grow_init)
    opt = torch.optim.Adam(m.parameters(), lr=0.02)
    ref = SlowAWNN(m, lr=0.02)
    gen = torch.Generator().manual_seed(9)
    batches = [(torch.randn(32, 2, generator=gen), torch.randint(0, 3, (32,), generator=gen))
               for _ in range(24)]
    nudges = {5: 0.4, 12: -0.8}
    seen = []
    for step, widths in enumerate(_regime_run(m, opt, AWNNRegime(sigma_theta=2.0), batches, nudges)):
        x, y = batches[step]
        ref.adam(ref.grads(x, y, 2.0, 200))
        if step in nudges:
            ref.raw = ref.raw + nudges[step]
        ref.update_widths()
        assert widths == ref.widths, f"step {step}"
        seen.append(sum(widths))
        for p, r in zip(per_piece(m, list(m.parameters())), ref.params(), strict=True):
            torch.testing.assert_close(p.detach(), r, rtol=1e-9, atol=1e-11)
    moves = [b - a for a, b in zip(seen, seen[1:])]
    assert min(moves) < 0 < max(moves)            # the widths shrank and grew
    for key, want in (("exp_avg", ref.m), ("exp_avg_sq", ref.v)):
        got = per_piece(m, [opt.state[p][key] for p in m.parameters()])
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12 if key == "exp_avg" else 1e-15)
