"""Behaviour cloning: next-token cross-entropy on the expert demonstrations; no rollouts."""

import numpy as np

from repirl_jax.algorithms import losses
from repirl_jax.algorithms.base import Algorithm, register
from repirl_jax.algorithms.batches import Traj, pad_right
from repirl_jax.models import logprobs


class BC(Algorithm):
    name = "bc"
    uses_rollouts = False
    uses_advantages = False
    experts_in_data = True

    def policy_rows_per_prompt(self, config):
        return max(config.data.experts_per_prompt, 1)

    def policy_loss(self, config, cfg, act):
        def loss_fn(policy, mb):
            traj, extra = mb
            hidden = logprobs.sequence_hidden(policy["model"], cfg, *traj, act=act)
            lp, _ = logprobs.policy_logprobs(policy["model"], cfg, hidden, traj.response, config.train.logp_chunk,
                                             False)
            loss = losses.bc_loss(lp, traj.response_mask, extra["num_tokens"])
            return loss, {"bc_nll": loss}
        return loss_fn

    def offline_batch(self, engine, records):
        k = max(engine.num_experts, 1)
        toks, mask = pad_right([r["expert_ids"][j] for r in records for j in range(k)], engine.response_len,
                               engine.pad_id)
        pt, pm = engine.prompt_arrays(records, k)
        return Traj(pt, pm, toks, np.asarray(mask)), {}, k


register(BC())
