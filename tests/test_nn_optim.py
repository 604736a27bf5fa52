"""Modules (naming, state, modes), AdamW against torch.optim.AdamW, the schedule and clipping."""
import numpy as np
import pytest

import minillm as mm
from minillm import nn
from minillm.optim import AdamW, LinearWarmupDecay, clip_grad_norm

# torch is the oracle of the two *_matches_torch tests only: they take the `torch` fixture (tests/conftest.py),
# which skips them alone when torch is missing.


class Tiny(nn.Module):
    def __init__(self):
        self.embed = nn.Embedding(7, 4)
        self.layers = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 3)])
        self.norm = nn.LayerNorm(3)
        self.drop = nn.Dropout(0.5)

    def forward(self, ids):
        h = self.embed(ids)
        for layer in self.layers:
            h = layer(h).tanh()
        return self.drop(self.norm(h))


def test_module_names_state_and_modes():
    m = Tiny()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["embed.weight", "layers.0.weight", "layers.0.bias", "layers.1.weight",
                     "layers.1.bias", "norm.weight", "norm.bias"]
    state = m.state_dict()
    m2 = Tiny()
    m2.load_state_dict(state)
    for (n, a), (_, b) in zip(m.named_parameters(), m2.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=n)
    bad = dict(state, **{"norm.bias": np.zeros(5, np.float32)})
    with pytest.raises(ValueError, match=r"norm.bias.*\(5,\).*\(3,\)"):
        m2.load_state_dict(bad)
    with pytest.raises(KeyError, match="missing"):
        m2.load_state_dict({"embed.weight": state["embed.weight"]})
    m.eval()
    assert not m.drop.training
    ids = np.array([[1, 2, 3]])
    np.testing.assert_array_equal(m(ids).data, m(ids).data)  # eval: dropout off, deterministic
    m.train()
    assert m.drop.training
    with pytest.raises(IndexError, match=r"\[0, 7\)"):
        m(np.array([[7]]))


def test_adamw_matches_torch(torch):
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal((5, 3)).astype(np.float32)
    grads = [rng.standard_normal((5, 3)).astype(np.float32) for _ in range(5)]
    p = nn.Parameter(p0.copy())
    opt = AdamW([p], lr=1e-2, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1)
    tp = torch.nn.Parameter(torch.tensor(p0.copy()))
    topt = torch.optim.AdamW([tp], lr=1e-2, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1)
    for g in grads:
        p.grad = g.copy()
        opt.step()
        tp.grad = torch.tensor(g)
        topt.step()
    # float32 updates of O(lr) on O(1) weights, five steps: ~1e-7 rounding per step.
    np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_adamw_state_dict_resumes_identically():
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal(4).astype(np.float32) for _ in range(4)]

    def run(split):
        p = nn.Parameter(np.ones(4, np.float32))
        opt = AdamW([p], lr=0.1)
        for i, g in enumerate(grads):
            if i == split:
                state = opt.state_dict()
                p = nn.Parameter(p.data.copy())
                opt = AdamW([p], lr=0.1)
                opt.load_state_dict(state)
            p.grad = g
            opt.step()
        return p.data

    np.testing.assert_array_equal(run(split=2), run(split=99))


def test_schedule_warmup_then_linear_decay():
    p = nn.Parameter(np.ones(1, np.float32))
    opt = AdamW([p], lr=1.0)
    sched = LinearWarmupDecay(opt, warmup_steps=4, total_steps=12)
    lrs = []
    for step in range(12):
        sched.set_step(step)
        lrs.append(opt.param_groups[0]["lr"])
    np.testing.assert_allclose(lrs[:4], [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(lrs[4:], [1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])


def test_clip_grad_norm_after_backward_through_a_broadcast():
    """The gradient of (p + 1).sum() starts as a read-only broadcast view; clipping scales .grad in place."""
    p = nn.Parameter(np.ones(4, np.float32))
    (p + 1).sum().backward()
    norm = clip_grad_norm([p], 1.0)
    assert norm == pytest.approx(2.0)  # |(1, 1, 1, 1)| = 2, exact in float32
    np.testing.assert_allclose(p.grad, 0.5, rtol=1e-6)  # scale 1 / (2 + 1e-6): 5e-7 below 0.5


def test_clip_grad_norm_matches_torch(torch):
    rng = np.random.default_rng(2)
    gs = [rng.standard_normal((3, 4)).astype(np.float32) * 5, rng.standard_normal(7).astype(np.float32)]
    ps = [nn.Parameter(np.zeros_like(g)) for g in gs]
    for p, g in zip(ps, gs):
        p.grad = g.copy()
    norm = clip_grad_norm(ps, 1.0)
    tps = [torch.nn.Parameter(torch.zeros(g.shape)) for g in gs]
    for tp, g in zip(tps, gs):
        tp.grad = torch.tensor(g)
    tnorm = torch.nn.utils.clip_grad_norm_(tps, 1.0)
    assert abs(norm - float(tnorm)) < 1e-4 * float(tnorm)
    for p, tp in zip(ps, tps):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-5, atol=1e-7)
