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
"""
from __future__ import annotations

import torch


class RecurrentGRU(torch.autograd.Function):
    """Runs h_t = GRU(gi_t, h_{t-1}) over a sequence whose input projection ``gi = x W_ih^T + b_ih``
    was computed beforehand (one matmul for all steps). Saves what backward needs; no autograd graph
    per step, so a 500-step sequence costs two Python loops of a few fused ops each."""

    @staticmethod
    def forward(ctx, gi, w_hh, b_hh, h0, h_start, reset, start_is_initial: bool, rltools_gradients: bool):
        # gi: (S, B, 3H); w_hh: (3H, H); b_hh: (3H,); h0: (H,); h_start: (B, H); reset: (S, B) bool or None
        seq_len, batch, three_h = gi.shape
        hidden = three_h // 3
        out = gi.new_empty(seq_len, batch, hidden)
        h_prev_all = gi.new_empty(seq_len, batch, hidden)
        gates = gi.new_empty(seq_len, batch, three_h)  # post-activation r, z, n
        ghn_all = gi.new_empty(seq_len, batch, hidden)  # W_hn h + b_hn (needed for dr)
        h0_rows = h0.expand(batch, hidden)
        h = h_start
        for t in range(seq_len):
            if reset is not None:
                h = torch.where(reset[t].unsqueeze(1), h0_rows, h)
            h_prev_all[t] = h
            gh = torch.addmm(b_hh, h, w_hh.t())
            g = gates[t]
            torch.sigmoid(gi[t, :, : 2 * hidden] + gh[:, : 2 * hidden], out=g[:, : 2 * hidden])
            r = g[:, :hidden]
            z = g[:, hidden : 2 * hidden]
            ghn = gh[:, 2 * hidden :]
            ghn_all[t] = ghn
            torch.tanh(torch.addcmul(gi[t, :, 2 * hidden :], r, ghn), out=g[:, 2 * hidden :])
            n = g[:, 2 * hidden :]
            h = torch.addcmul((1 - z) * n, z, h)  # (1 - z) n + z h, in rl-tools' order
            out[t] = h
        ctx.save_for_backward(w_hh, h_prev_all, gates, ghn_all, reset if reset is not None else gi.new_empty(0))
        ctx.has_reset = reset is not None
        ctx.start_is_initial = start_is_initial
        ctx.rltools = rltools_gradients
        return out

    @staticmethod
    def backward(ctx, grad_out):
        w_hh, h_prev_all, gates, ghn_all, reset = ctx.saved_tensors
        reset = reset if ctx.has_reset else None
        seq_len, batch, hidden = h_prev_all.shape
        d_gi = grad_out.new_empty(seq_len, batch, 3 * hidden)
        d_gh_all = grad_out.new_empty(seq_len, batch, 3 * hidden)
        # rows whose previous state was h0: step 0 when the sequence starts from h0, and flagged resets
        from_h0 = torch.zeros(seq_len, batch, dtype=torch.bool, device=grad_out.device)
        if reset is not None:
            from_h0 |= reset
        if ctx.start_is_initial:
            from_h0[0] = True
        any_from_h0 = from_h0.any(1).tolist()  # one host sync instead of one per step
        d_h0 = grad_out.new_zeros(hidden)
        dh_carry = torch.zeros_like(grad_out[0])
        grad_out = grad_out.contiguous()
        for t in range(seq_len - 1, -1, -1):
            dh = grad_out[t] + dh_carry
            g = gates[t]
            r, z, n = g[:, :hidden], g[:, hidden : 2 * hidden], g[:, 2 * hidden :]
            h_prev = h_prev_all[t]
            dg = d_gi[t]
            dn_pre = dg[:, 2 * hidden :]
            torch.mul(dh * (1 - z), 1 - n * n, out=dn_pre)
            torch.mul(dh * (h_prev - n), z * (1 - z), out=dg[:, hidden : 2 * hidden])
            torch.mul(dn_pre * ghn_all[t], r * (1 - r), out=dg[:, :hidden])
            dgh = d_gh_all[t]
            dgh[:, : 2 * hidden] = dg[:, : 2 * hidden]
            torch.mul(dn_pre, r, out=dgh[:, 2 * hidden :])
            dh_prev = torch.addmm(dh * z, dgh, w_hh)
            if any_from_h0[t]:
                rows = from_h0[t].unsqueeze(1)
                d_h0 += (dh_prev * rows).sum(0)
                dh_prev = dh_prev.masked_fill(rows, 0)
            dh_carry = dh_prev
        d_h_start = dh_carry  # gradient w.r.t. the state the sequence started from (when not h0)

        flat_dgh = d_gh_all.reshape(-1, 3 * hidden)
        if ctx.rltools:
            # (2) no W_hh term at step 0 when starting from h0 (rl-tools' reset_full_batch branch)
            w_rows = torch.ones(seq_len, batch, 1, dtype=grad_out.dtype, device=grad_out.device)
            if ctx.start_is_initial:
                w_rows[0] = 0
            d_w_hh = (d_gh_all * w_rows).reshape(-1, 3 * hidden).t() @ h_prev_all.reshape(-1, hidden)
            # (3) no b_hn term for samples reset at t > 0
            d_b_hh = flat_dgh.sum(0)
            if reset is not None and seq_len > 1:
                mask = reset[1:].unsqueeze(2)
                d_b_hh[2 * hidden :] -= (d_gh_all[1:, :, 2 * hidden :] * mask).sum((0, 1))
            # (1) initial_hidden_state gets no gradient
            d_h0 = torch.zeros_like(d_h0)
        else:
            d_w_hh = flat_dgh.t() @ h_prev_all.reshape(-1, hidden)
            d_b_hh = flat_dgh.sum(0)
        if ctx.start_is_initial:
            d_h_start = None
        return d_gi, d_w_hh, d_b_hh, d_h0, d_h_start, None, None, None
