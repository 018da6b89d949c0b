"""PRIME (Cui et al., 2025): an implicit PRM, a copy of the policy trained by cross-entropy of
sigmoid(beta * sum_t log(pi_phi / pi_ref)) against the outcome; its token rewards beta * log(pi_phi / pi_ref)
are the process reward of the RLOO advantage. Rows of prompts the accuracy filter dropped are left out of
the loss, its normaliser and its accuracy (losses.prime_implicit_prm_loss with keep_b / num_rows)."""

import numpy as np

from repirl_jax.algorithms import losses
from repirl_jax.algorithms.base import Algorithm, register
from repirl_jax.models import logprobs


class PRIME(Algorithm):
    name = "prime"
    needs_prm = True
    needs_reference = True
    required = {"prm.head": "implicit"}
    paper = {"prm.lr": 5e-7}

    def prm_losses(self, config, cfg, act, token_rewards):
        def prime_loss(prm, mb):
            """num_tokens here is the mini-batch's count of kept rows."""
            traj, extra = mb
            lp = logprobs.response_logprobs(prm, cfg, *traj, chunk=config.train.logp_chunk, with_entropy=False,
                                            act=act)[0]
            return losses.prime_implicit_prm_loss(lp, extra["ref_logp"], traj.response_mask, extra["outcome"],
                                                  config.prm.beta, extra["keep"], extra["num_tokens"])
        return {"main": prime_loss}

    def reward_model_step(self, engine, batch):
        row_keep = np.repeat(batch.keep, engine.num_rollouts).astype(np.float32)
        extra = {"ref_logp": batch.ref_logp, "outcome": batch.outcome.astype(np.float32), "keep": row_keep}
        return engine.update_prm("main", batch.rollouts, extra, engine.num_rollouts, count=row_keep)


register(PRIME())
