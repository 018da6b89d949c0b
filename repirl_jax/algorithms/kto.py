"""KTO (Ethayarajh et al., 2024) on each prompt's rollouts (correct: desirable, failed: undesirable) and its
k expert demonstrations (desirable), METHOD.md section 4; sequence log-ratios to a frozen reference."""

import numpy as np

from repirl_jax.algorithms import losses
from repirl_jax.algorithms.base import Algorithm, register, with_experts
from repirl_jax.models import logprobs


class KTO(Algorithm):
    name = "kto"
    needs_reference = True
    uses_advantages = False

    def policy_rows_per_prompt(self, config):
        return config.rollout.n + config.data.experts_per_prompt

    def rollout_ref_logp(self, config):
        return False  # its reference log-probs are of its own rows (rollouts and demonstrations)

    def policy_loss(self, config, cfg, act):
        def loss_fn(policy, mb):
            traj, extra = mb
            hidden = logprobs.sequence_hidden(policy["model"], cfg, *traj, act=act)
            lp, _ = logprobs.policy_logprobs(policy["model"], cfg, hidden, traj.response, config.train.logp_chunk, True)
            loss, aux = losses.kto_loss(lp, extra["ref_logp"], traj.response_mask, extra["desirable"],
                                        extra["undesirable"], beta=config.kto.beta)
            return loss * extra["row_scale"], aux
        return loss_fn

    def policy_batch(self, engine, batch):
        n, k, bsz = engine.num_rollouts, engine.num_experts, len(batch.records)
        good, bad = (batch.outcome >= 1.0).astype(np.float32), (batch.outcome < 1.0).astype(np.float32)
        if k and any(r["expert_ids"] for r in batch.records):
            traj, cat = with_experts(engine, batch.records, batch.rollouts, batch.keep)
            desirable, undesirable = cat(good, np.ones(bsz * k, np.float32)), cat(bad, np.zeros(bsz * k, np.float32))
            per_prompt = n + k
        else:
            traj, per_prompt, desirable, undesirable = batch.rollouts, n, good, bad
        row_keep = np.repeat(batch.keep, per_prompt)
        extra = {"desirable": desirable * row_keep, "undesirable": undesirable * row_keep,
                 "ref_logp": np.asarray(engine.logp("ref", traj))}
        return traj, extra, per_prompt


register(KTO())
