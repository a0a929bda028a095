"""Why does partial L2 balancing blow up the 7-layer DFA net? (issue 8; notes of nb_dfa.yaml)

Trains DFANet on MNIST (Adam, StepLR 0.95, batch 64, the authors' setting) and prints per epoch:
mean / max batch loss and the first step with loss > 10, test accuracy, per-layer weight norms,
relative weight change, activation RMS, the cosine between the DFA signal e·B_l and the true
gradient dL/dh_l, and, after each balancing sweep, the range of log λ per layer.

    PYTHONPATH=. python scripts/diagnose_dfa_balance.py --mode nb --data-root ../shared/data \\
        --fraction 1.0 --epochs 30 --device cuda

Modes: plain | nb (L2 sweep + Adam state rescaled, the suite's default) | nb_covariant (also
B_l -> B_l Λ_l^-1) | nb_nostate (Adam state left alone) | nb_reset (Adam state cleared).
--bp trains the same net by backprop (control).
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

import models.dfa as dfa
from data import load_data
from models import balancing as nb

MODES = ("plain", "nb", "nb_covariant", "nb_nostate", "nb_reset")


def fmt(xs) -> str:
    return "[" + " ".join(f"{x:.3g}" for x in xs) + "]"


def alignment(model, x, y) -> list[float]:
    """cos(e·B_l, dL/dh_l) per hidden layer, over the active units of a probe batch."""
    hs, h = [], x
    for lin, act in zip(model.linears[:-1], model.activations):
        h = act(lin(h))
        hs.append(h)
    out = model.linears[-1](h)
    loss = F.cross_entropy(out, y)
    e = torch.autograd.grad(loss, out, retain_graph=True)[0]
    true = torch.autograd.grad(loss, hs)
    return [F.cosine_similarity(((e @ model.feedback(k)) * (h > 0)).flatten(),
                                (g * (h > 0)).flatten(), 0).item()
            for k, (h, g) in enumerate(zip(hs, true))]


@torch.no_grad()
def activity(model, x) -> tuple[list[float], float]:
    rms, h = [], x
    for lin, act in zip(model.linears[:-1], model.activations):
        h = act(lin(h))
        rms.append(h.pow(2).mean().sqrt().item())
    return rms, model.linears[-1](h).abs().max().item()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="plain", choices=MODES)
    ap.add_argument("--layers", type=int, default=7)
    ap.add_argument("--width", type=int, default=800)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--fraction", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-root", default="datasets")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bp", action="store_true", help="train by backprop instead (control)")
    a = ap.parse_args()
    dev = torch.device(a.device)
    if a.bp:   # the DFA identity then passes the backpropagated gradient through
        dfa._DirectFeedback.apply = staticmethod(lambda h, feedback, slot: h)
    torch.manual_seed(a.seed)
    data = load_data(OmegaConf.create({"name": "mnist", "fraction": a.fraction}),
                     OmegaConf.create({"root": a.data_root, "cache": "results/cache",
                                       "download": False}), dev)
    x, y = data.train.inputs[0].flatten(1), data.train.target
    x_test, y_test = data.test.inputs[0].flatten(1), data.test.target
    transform = "covariant" if a.mode == "nb_covariant" else "fixed"
    model = dfa.DFANet(784, [a.width] * a.layers, 10, feedback_transform=transform).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, 0.95)
    gen = torch.Generator().manual_seed(a.seed)
    print(vars(a), "n_train", len(y), flush=True)
    for epoch in range(1, a.epochs + 1):
        t0 = time.time()
        before = [lin.weight.detach().clone() for lin in model.linears]
        losses = []
        for idx in torch.randperm(len(y), generator=gen).to(dev).split(64):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        losses = torch.stack(losses).cpu()
        big = (losses > 10).nonzero()
        with torch.no_grad():
            acc = (model(x_test).argmax(1) == y_test).float().mean().item() * 100
        rel = [((lin.weight - w).norm() / w.norm()).item() for lin, w in zip(model.linears, before)]
        rms, logit = activity(model, x[:512])
        print(f"epoch {epoch} loss {losses.mean():.4g} max {losses.max():.4g} "
              f"first>10 {big[0].item() if len(big) else -1} test {acc:.2f} ({time.time() - t0:.1f}s)\n"
              f"  |W| {fmt(lin.weight.norm().item() for lin in model.linears)}\n"
              f"  relative dW {fmt(rel)}\n  activation rms {fmt(rms)} max|logit| {logit:.3g}\n"
              f"  cos(eB, dL/dh) {fmt(alignment(model, x[:512], y[:512]))}", flush=True)
        sched.step()
        if a.mode == "plain":
            continue
        result = nb.partial_balance(model, 2)
        print(f"  balance: log λ min {fmt(u.min().item() for u in result.log_scales)} "
              f"max {fmt(u.max().item() for u in result.log_scales)}", flush=True)
        if a.mode in ("nb", "nb_covariant"):
            nb.rescale_optimizer_state(opt, result.param_scales())
        elif a.mode == "nb_reset":
            opt.state.clear()
        model.after_balancing(result.log_scales)


if __name__ == "__main__":
    main()
