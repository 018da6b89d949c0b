"""The PRM's head: one object per kind (`prm.head`), chosen once from the config.

    head = prm_heads.get(config)
    prm = head.tree(trunk, scalar_head)          # the trainable PRM tree
    r_br = head.token_rewards(prm, cfg, traj, ref_logp, chunk, act)   # [B, R] float32, 0 off the response

  scalar      the paper's (METHOD.md section 1): a Qwen trunk and a linear head on its hidden state after a_t;
              the tree is {"trunk": qwen params, "head": {"kernel", "bias"}}.
  likelihood  beyond the paper (issue 11): the PRM is a whole Qwen model, r_t = log pi_phi(a_t | s_t).
  implicit    PRIME: a whole Qwen model, r_t = beta * (log pi_phi(a_t | s_t) - log pi_ref(a_t | s_t)); its
              rewards need the reference model's log-probs of the same rows.

Everything that differs between them lives here: the tree's shape, its shardings, how a frozen LoRA base sits
in it, the token rewards, what a run exports and how reports name it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from repirl_jax.models import logprobs
from repirl_jax.models.config import QwenConfig


@dataclasses.dataclass(frozen=True)
class PRMHead:
    name: str = "scalar"
    is_lm: bool = False  # a whole Qwen model whose LM head gives the reward (no {"trunk", "head"} split)
    needs_ref_logp: bool = False  # token rewards read the reference model's log-probs
    is_log_likelihood: bool = False  # r_t is the PRM's own log pi_phi(a_t | s_t)
    beta: float = 0.0  # implicit: the log-ratio's scale
    title: str = "scalar head"  # how pictures and reports name it

    def tree(self, trunk: Any, scalar_head: Any) -> Any:
        """The PRM's trainable tree from its trunk (Qwen params or a LoRA adapter) and a scalar head."""
        return trunk if self.is_lm else {"trunk": trunk, "head": scalar_head}

    def trunk(self, prm: Any) -> Any:
        """The Qwen part of a PRM tree."""
        return prm if self.is_lm else prm["trunk"]

    def shardings(self, trunk_shardings: Any, head_shardings: Any) -> Any:
        return self.tree(trunk_shardings, head_shardings)

    def frozen(self, base: Any) -> Any:
        """Where a frozen LoRA base joins the PRM tree (`lora.join(frozen, prm)`), or None."""
        return None if base is None else base if self.is_lm else {"trunk": base}

    def token_rewards(self, prm: Any, cfg: QwenConfig, traj, ref_logp, chunk: int, act=None):
        """[B, R] float32 token rewards of the response rows `traj` (a batches.Traj)."""
        if not self.is_lm:  # r_phi(s_t, a_t) = h_t . kernel + bias
            return logprobs.prm_token_rewards(prm, cfg, *traj, act=act)
        lp = logprobs.response_logprobs(prm, cfg, *traj, chunk=chunk, with_entropy=False, act=act)[0]
        if self.is_log_likelihood:
            return lp
        return self.beta * (lp - ref_logp) * traj.response_mask  # PRIME: r_t = beta log(pi_phi / pi_ref)


HEADS = {
    "scalar": PRMHead(),
    "likelihood": PRMHead("likelihood", is_lm=True, is_log_likelihood=True,
                          title="likelihood head (r_t = log pi_phi(a_t|s_t))"),
    "implicit": PRMHead("implicit", is_lm=True, needs_ref_logp=True, title="implicit PRM (beta log pi_phi/pi_ref)"),
}


def get(config) -> PRMHead:
    """The head a training config names (prm.head; the implicit head takes prm.beta)."""
    name = config.prm.head
    if name not in HEADS:
        raise ValueError(f"prm.head={name!r}: expected one of {tuple(HEADS)}")
    head = HEADS[name]
    return dataclasses.replace(head, beta=float(config.prm.beta)) if head.needs_ref_logp else head
