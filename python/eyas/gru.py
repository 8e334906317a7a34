"""GRU recurrence with per-step resets and a choice of gradient: rl-tools' or exact.

rl-tools' GRU backward (rl_tools/nn/layers/gru/operations_generic.h, rltools 2.2.1) departs from exact
autograd in three places, all tied to the initial hidden state h0 (see docs/gradients.md):

1. ``initial_hidden_state`` never receives a gradient (``LEARN_INITIAL_HIDDEN_STATE`` is false).
2. Step 0 of a sequence: the ``W_hh`` gradient lacks the term ``dpre_h[0]^T h0``.
3. Steps t > 0 flagged as resets: the ``b_hn`` gradient (last third of ``b_hh``) lacks that sample's
   ``r * dn_pre`` (rl-tools zeroes the sample's row before summing the bias gradient).

Everything else (outputs, dL/d(input), input-side weights, ``b_hr``/``b_hz``) is exact.
``RecurrentGRU.apply(..., rltools_gradients=True)`` reproduces these, ``False`` gives exact gradients.
Gate order in the 3H rows is (r, z, n), the same in rl-tools and PyTorch.

Speed (CPU, small batches): a step costs per-op overhead, not arithmetic, so both loops do as few ops per step
as the recurrence allows, into preallocated buffers through views made once per call (``unbind``): forward six
(W_hh h + b_hh, the r/z sum, sigmoid, the n pre-activation, tanh, the state update), backward four; everything
that does not depend on the step's incoming gradient (the gate derivatives) is computed for all steps at once.
"""
from __future__ import annotations

import torch


def gru_sequence(gi: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor, h0: torch.Tensor,
                 h_start: torch.Tensor, reset: torch.Tensor | None, save: bool = False):
    """The recurrence over ``gi = x W_ih^T + b_ih`` (S, B, 3H) from ``h_start`` (B, H); ``reset`` (S, B) bool
    replaces a row's incoming state by ``h0``. Returns ``(out, rz, n, gh)``: the states (S, B, H) and, with
    ``save``, what backward needs (post-activation r|z (S, B, 2H) and n (S, B, H), W_hh h + b_hh (S, B, 3H));
    without it those three are one step's scratch."""
    seq_len, batch, three_h = gi.shape
    hd = three_h // 3
    if seq_len == 1:  # step-wise use (rollouts, APG): the same ops without the per-step views
        return _single_step(gi, w_hh, b_hh, h0, h_start, reset)
    steps = seq_len if save else 1
    out = gi.new_empty(seq_len, batch, hd)
    gh, rz, n = gi.new_empty(steps, batch, three_h), gi.new_empty(steps, batch, 2 * hd), gi.new_empty(steps, batch, hd)

    def per_step(t: torch.Tensor):  # one view per step (the scratch view repeated when not saving)
        views = t.unbind(0)
        return views if save else views * seq_len

    gi_rz, gi_n = gi[..., : 2 * hd].unbind(0), gi[..., 2 * hd :].unbind(0)
    gh_t, gh_rz, gh_n = per_step(gh), per_step(gh[..., : 2 * hd]), per_step(gh[..., 2 * hd :])
    rz_t, r_t, z_t, n_t = per_step(rz), per_step(rz[..., :hd]), per_step(rz[..., hd:]), per_step(n)
    out_t = out.unbind(0)
    w_t, h0_rows = w_hh.t(), h0.expand(batch, hd)
    resets = [False] * seq_len if reset is None else reset.any(1).tolist()  # one host sync per sequence
    reset_rows = None if reset is None else reset.unsqueeze(2).unbind(0)
    h = h_start
    for t in range(seq_len):
        if resets[t]:
            h = torch.where(reset_rows[t], h0_rows, h)
        torch.addmm(b_hh, h, w_t, out=gh_t[t])
        torch.add(gi_rz[t], gh_rz[t], out=rz_t[t]).sigmoid_()
        torch.addcmul(gi_n[t], r_t[t], gh_n[t], out=n_t[t]).tanh_()
        h = torch.lerp(n_t[t], h, z_t[t], out=out_t[t])  # (1 - z) n + z h
    return out, rz, n, gh


def gru_cell(gi: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor, h: torch.Tensor):
    """One step of the recurrence from ``h`` (B, H) with ``gi = x W_ih^T + b_ih`` (B, 3H), differentiable (no
    in-place ops): ``(h', r|z, n, W_hh h + b_hh)``; the same ops, in the same order, as `gru_sequence`'s loop."""
    hd = h.shape[-1]
    gh = torch.addmm(b_hh, h, w_hh.t())
    rz = torch.sigmoid(gi[:, : 2 * hd] + gh[:, : 2 * hd])
    n = torch.tanh(torch.addcmul(gi[:, 2 * hd :], rz[:, :hd], gh[:, 2 * hd :]))
    return torch.lerp(n, h, rz[:, hd:]), rz, n, gh


def _single_step(gi, w_hh, b_hh, h0, h, reset):
    """`gru_sequence` for a sequence of one step (bit-identical: the same ops in the same order)."""
    if reset is not None:
        h = torch.where(reset[0].unsqueeze(1), h0, h)
    return tuple(t.unsqueeze(0) for t in gru_cell(gi[0], w_hh, b_hh, h))


def _previous_states(out: torch.Tensor, h_start: torch.Tensor, h0: torch.Tensor, reset: torch.Tensor | None):
    """The state each step started from: the previous output, ``h_start`` at step 0, ``h0`` where reset."""
    h_prev = torch.cat([h_start.unsqueeze(0), out[:-1]])
    return h_prev if reset is None else torch.where(reset.unsqueeze(2), h0, h_prev)


def _gate_factors(rz: torch.Tensor, n: torch.Tensor, gh: torch.Tensor, h_prev: torch.Tensor):
    """Per-step factors of the gate derivatives, for all steps at once (they do not depend on dL/dh):
    ``zn`` (S, B, 2, H) = [(h_prev - n) z (1 - z), (1 - z)(1 - n^2)] turns dh into [dz_pre, dn_pre];
    ``rc`` (S, B, 2, H) = [r, (W_hn h + b_hn) r (1 - r)] turns dn_pre into [dn_pre r, dr_pre]."""
    hd = n.shape[-1]
    r, z = rz[..., :hd], rz[..., hd:]
    zn = n.new_empty(*n.shape[:2], 2, hd)
    rc = n.new_empty(*n.shape[:2], 2, hd)
    one_minus_z = 1 - z
    torch.mul(h_prev - n, z * one_minus_z, out=zn[:, :, 0])
    torch.mul(one_minus_z, 1 - n * n, out=zn[:, :, 1])
    rc[:, :, 0] = r
    torch.mul(gh[..., 2 * hd :], r * (1 - r), out=rc[:, :, 1])
    return zn, rc


def _backward_loop(grad_out, w_hh, zn, rc, z, from_h0, any_from_h0, exact_h0: bool):
    """dL/dh back through time. Returns ``buf`` (S, B, 4, H) = [dn_pre r, dr_pre, dz_pre, dn_pre] per step,
    dL/d(state the sequence started from) and, with ``exact_h0``, dL/dh0 from the rows that started from h0.
    ``buf[..., :3, :]`` is dL/d(W_hh h + b_hh) in (n, r, z) order, matched by ``w_nrz`` (W_hh's rows reordered);
    ``buf[..., 1:, :]`` is dL/d(gi) in (r, z, n) order: both are views, without a copy."""
    seq_len, batch, hd = grad_out.shape
    buf = grad_out.new_empty(seq_len, batch, 4, hd)
    w_nrz = w_hh.reshape(3, hd, hd).roll(1, 0).reshape(3 * hd, hd)  # rows (r, z, n) -> (n, r, z)
    zn_t, rc_t = zn.unbind(0), rc.unbind(0)
    dzn_t, dn_t, drc_t = buf[:, :, 2:].unbind(0), buf[:, :, 3:].unbind(0), buf[:, :, :2].unbind(0)
    dgh_t = buf[:, :, :3].reshape(seq_len, batch, 3 * hd).unbind(0)
    go_t, z_t = grad_out.unbind(0), z.unbind(0)
    d_h0 = grad_out.new_zeros(hd)
    # dL/dh of the step being processed, as (B, H) and (B, 1, H) views; two buffers take turns
    pairs = [(p, p.unsqueeze(1)) for p in (grad_out.new_empty(batch, hd), grad_out.new_empty(batch, hd))]
    dh, dh3 = go_t[-1], go_t[-1].unsqueeze(1)
    for t in range(seq_len - 1, -1, -1):
        torch.mul(dh3, zn_t[t], out=dzn_t[t])  # dz_pre, dn_pre
        torch.mul(dn_t[t], rc_t[t], out=drc_t[t])  # dn_pre r, dr_pre
        nxt, nxt3 = pairs[t % 2]
        if t == 0 or any_from_h0[t]:
            torch.addmm(dh * z_t[t], dgh_t[t], w_nrz, out=nxt)  # dL/dh_{t-1} through this step
            if any_from_h0[t]:
                rows = from_h0[t].unsqueeze(1)
                if exact_h0:
                    d_h0 += (nxt * rows).sum(0)
                nxt.masked_fill_(rows, 0)
            if t == 0:
                return buf, nxt, d_h0
            nxt.add_(go_t[t - 1])
        else:
            torch.addcmul(go_t[t - 1], dh, z_t[t], out=nxt).addmm_(dgh_t[t], w_nrz)
        dh, dh3 = nxt, nxt3
    return buf, None, d_h0


class RecurrentGRU(torch.autograd.Function):
    """Runs h_t = GRU(gi_t, h_{t-1}) over a sequence whose input projection ``gi = x W_ih^T + b_ih``
    was computed beforehand (one matmul for all steps). Saves what backward needs; no autograd graph
    per step, so a 500-step sequence costs two Python loops of a few fused ops each."""

    @staticmethod
    def forward(ctx, gi, w_hh, b_hh, h0, h_start, reset, start_is_initial: bool, rltools_gradients: bool):
        # gi: (S, B, 3H); w_hh: (3H, H); b_hh: (3H,); h0: (H,); h_start: (B, H); reset: (S, B) bool or None
        out, rz, n, gh = gru_sequence(gi, w_hh, b_hh, h0, h_start, reset, save=True)
        empty = gi.new_empty(0)
        ctx.save_for_backward(w_hh, h0, h_start, out, rz, n, gh, reset if reset is not None else empty)
        ctx.has_reset = reset is not None
        ctx.start_is_initial = start_is_initial
        ctx.rltools = rltools_gradients
        return out

    @staticmethod
    def backward(ctx, grad_out):
        w_hh, h0, h_start, out, rz, n, gh, reset = ctx.saved_tensors
        reset = reset if ctx.has_reset else None
        seq_len, batch, hd = out.shape
        h_prev = _previous_states(out, h_start, h0, reset)
        zn, rc = _gate_factors(rz, n, gh, h_prev)
        # rows whose previous state was h0: step 0 when the sequence starts from h0, and flagged resets
        from_h0 = torch.zeros(seq_len, batch, dtype=torch.bool, device=grad_out.device)
        if reset is not None:
            from_h0 |= reset
        if ctx.start_is_initial:
            from_h0[0] = True
        any_from_h0 = from_h0.any(1).tolist()  # one host sync instead of one per step
        buf, d_h_start, d_h0 = _backward_loop(grad_out.contiguous(), w_hh, zn, rc, rz[..., hd:], from_h0,
                                              any_from_h0, exact_h0=not ctx.rltools)
        d_gi = buf[:, :, 1:].reshape(seq_len, batch, 3 * hd)
        d_w_hh, d_b_hh = _hidden_weight_gradients(buf, h_prev, reset, ctx.start_is_initial, ctx.rltools)
        if ctx.rltools:
            d_h0 = torch.zeros_like(d_h0)  # (1) initial_hidden_state gets no gradient
        if ctx.start_is_initial:
            d_h_start = None
        return d_gi, d_w_hh, d_b_hh, d_h0, d_h_start, None, None, None


def _hidden_weight_gradients(buf, h_prev, reset, start_is_initial: bool, rltools: bool):
    """dL/dW_hh and dL/db_hh in (r, z, n) order from ``buf`` (see `_backward_loop`), with rl-tools' departures."""
    seq_len, batch, _, hd = buf.shape
    dgh = buf[:, :, :3].reshape(seq_len, batch, 3 * hd)  # (n, r, z) order
    first = 1 if rltools and start_is_initial else 0  # (2) no W_hh term at step 0 when starting from h0
    d_w = dgh[first:].reshape(-1, 3 * hd).t() @ h_prev[first:].reshape(-1, hd)
    d_b = dgh.reshape(-1, 3 * hd).sum(0)
    if rltools and reset is not None and seq_len > 1:  # (3) no b_hn term for samples reset at t > 0
        d_b[:hd] -= (buf[1:, :, 0] * reset[1:].unsqueeze(2)).sum((0, 1))
    # (n, r, z) rows -> (r, z, n)
    return d_w.reshape(3, hd, hd).roll(-1, 0).reshape(3 * hd, hd), d_b.reshape(3, hd).roll(-1, 0).reshape(-1)
