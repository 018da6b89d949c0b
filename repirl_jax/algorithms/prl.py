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

    def policy_batch(self, engine, b):
        extra = {"logp_old": b.logp_old.astype("float32"), "ref_logp": b.ref_logp}
        extra.update(estimate(engine, "prl", b.rollouts, b.outcome, None, b.group, b.logp_old, b.ref_logp,
                              step_ends(engine, b.rollouts)))
        return b.rollouts, extra, engine.num_rollouts


register(PRL())
