"""PRL (Yao et al., 2601.10201): no reward model; the process reward at each step end is the group-relative
outcome advantage minus the policy/reference log-ratio to go (losses.prl_advantages), used as the advantage."""

from repirl_jax.algorithms.base import Algorithm, estimate, register, step_ends


class PRL(Algorithm):
    name = "prl"
    needs_reference = True
    uses_steps = True
    paper = {"advantage.c": 0.0}

    def estimator(self, config):
        return "prl"

    def policy_batch(self, engine, batch):
        extra = {"logp_old": batch.logp_old.astype("float32"), "ref_logp": batch.ref_logp}
        extra.update(estimate(engine, "prl", batch.rollouts, batch.outcome, None, batch.group, batch.logp_old,
                              batch.ref_logp, step_ends(engine, batch.rollouts)))
        return batch.rollouts, extra, engine.num_rollouts


register(PRL())
