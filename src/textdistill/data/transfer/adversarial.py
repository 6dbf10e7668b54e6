"""Adversarial transfer rows: token replacements where teacher and student disagree most.

In the spirit of MATE-KD (Rashid et al., ACL 2021), the student is also trained on perturbed inputs that
*maximise* the teacher-student divergence. What is implemented is a first-order, HotFlip-style search
(Ebrahimi et al. 2018) on every real batch:

1. D = T^2 * KL(softmax(t/T) || softmax(s/T)) on the batch (``knowledge.losses.kd_kl``), with the teacher's
   and the student's input embeddings e_t, e_s as leaves; g_t = dD/de_t, g_s = dD/de_s (one backward pass, no
   parameter update).
2. The first-order gain of putting token v at position i instead of x_i is
   ``g_s[i] . (E_s[v] - E_s[x_i]) + g_t[i] . (E_t[v] - E_t[x_i])`` (E: each model's embedding matrix).
3. Per example, the ``flips`` best (position, token) pairs at distinct positions replace the originals;
   special tokens and padding are never touched, and never inserted.

The student then minimises the recipe's logit terms on these rows too (teacher labels only; no hard label),
interleaved with the real batches (``transfer.adversarial.every``). Differences from MATE-KD: no generator
network (MATE-KD trains a masked-LM generator with a Gumbel-softmax relaxation to produce the
perturbations, alternating generator and student steps); here a gradient-guided search replaces it,
which needs teacher and student to share one tokenizer and a live teacher (new rows, no cache).
"""
from __future__ import annotations

import torch

from ...knowledge.losses import kd_kl


def hotflip(student, teacher, inputs: dict, *, flips: int, temperature: float, special_ids: list[int]) -> dict:
    """The batch ``inputs`` with ``flips`` tokens per example replaced to raise the divergence (see above). The
    search runs in fp32 also inside a mixed-precision step: bf16 gradients blur near-ties of the first-order
    gains, and fp16 ones (unscaled here) underflow."""
    with torch.autocast(inputs["input_ids"].device.type, enabled=False):
        return _hotflip(student, teacher, inputs, flips=flips, temperature=temperature, special_ids=special_ids)


def _hotflip(student, teacher, inputs: dict, *, flips: int, temperature: float, special_ids: list[int]) -> dict:
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    rest = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    E_s, E_t = student.get_input_embeddings().weight, teacher.get_input_embeddings().weight
    was_training = student.training
    student.eval()
    try:
        e_s = E_s[ids].detach().requires_grad_()
        e_t = E_t[ids].detach().requires_grad_()
        s = student(inputs_embeds=e_s, attention_mask=mask, **rest).logits
        t = teacher(inputs_embeds=e_t, attention_mask=mask, **rest).logits
        g_s, g_t = torch.autograd.grad(kd_kl(s, t, temperature=temperature), (e_s, e_t))
    finally:
        student.train(was_training)
    with torch.no_grad():
        # gain[b, i, v] = g_s[b,i] . E_s[v] + g_t[b,i] . E_t[v] - (the same for the current token)
        gain = g_s @ E_s.detach().T + g_t @ E_t.detach().T
        gain -= gain.gather(-1, ids.unsqueeze(-1))
        gain[..., special_ids] = float("-inf")  # never insert a special token
        frozen = (mask == 0) | torch.isin(ids, torch.tensor(special_ids, device=ids.device))
        gain[frozen] = float("-inf")  # never replace [CLS], [SEP], padding
        best, token = gain.max(-1)  # the best replacement at each position
        k = min(flips, ids.shape[1])
        top = best.topk(k, dim=-1)
        new = ids.clone()
        ok = torch.isfinite(top.values) & (top.values > 0)  # only replacements that raise the divergence
        rows = torch.arange(ids.shape[0], device=ids.device).unsqueeze(-1).expand_as(top.indices)
        new[rows[ok], top.indices[ok]] = token.gather(-1, top.indices)[ok]
    return {**inputs, "input_ids": new}
