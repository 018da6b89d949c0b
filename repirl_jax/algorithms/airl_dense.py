"""Dense reasoning reward by adversarial IRL (papers/dense_reasoning_reward_airl_2510.01857.txt): the
scalar-head PRM is a token-wise expert-vs-policy discriminator (losses.airl_discriminator_loss); its
group-normalised, discounted logits are the policy advantage (losses.airl_dense_advantages)."""

import numpy as np

from repirl_jax.algorithms import losses
from repirl_jax.algorithms.base import Algorithm, ConfigError, estimate, register, with_experts
from repirl_jax.algorithms.batches import encode_responses
from repirl_jax.data import synthetic


class AIRLDense(Algorithm):
    name = "airl_dense"
    needs_prm = True
    needs_experts = True
    required = {"prm.head": "scalar"}
    paper = {"advantage.c": 1.0, "advantage.outcome_weight": 0.0}  # the discriminator's reward alone

    def estimator(self, config):
        return "airl_dense"

    def prm_rows_per_prompt(self, config):
        return config.rollout.n + config.data.experts_per_prompt * (2 if config.airl.perturbed_negatives else 1)

    def policy_rows_per_prompt(self, config):
        return config.rollout.n + (config.data.experts_per_prompt if config.airl.experts_in_group else 0)

    def validate(self, config):
        super().validate(config)
        if config.airl.perturbed_negatives and config.data.train != "synthetic":
            raise ConfigError("airl.perturbed_negatives corrupts one step with the synthetic task's `corrupt`: it "
                              "needs data.train=synthetic (set airl.perturbed_negatives=False for other data)")

    def prm_losses(self, config, cfg, act, token_rewards):
        def discriminator_loss(prm, mb):
            """Token-wise BCE of the discriminator logits (label: 1 expert, 0 policy / perturbed expert)."""
            traj, extra = mb
            return losses.airl_discriminator_loss(token_rewards(prm, traj, None), traj.response_mask, extra["label"],
                                                  config.airl.label_smoothing, extra["num_tokens"])
        return {"main": discriminator_loss}

    def reward_model_step(self, engine, batch):
        """One discriminator epoch: per prompt its n rollouts (label 0), its k demonstrations (label 1) and,
        with airl.perturbed_negatives, the k demonstrations with one corrupted step each (label 0)."""
        config, n, k, bsz = engine.config, engine.num_rollouts, engine.num_experts, len(batch.records)
        perturbed = config.airl.perturbed_negatives
        blocks = [self._perturbed_expert_ids(engine, batch.records, batch.it)] if perturbed else []
        traj, cat = with_experts(engine, batch.records, batch.rollouts, batch.keep, blocks)
        label = cat(np.zeros(bsz * n), np.ones(bsz * k), *[np.zeros(bsz * k)] * len(blocks)).astype(np.float32)
        return engine.update_prm("main", traj, {"label": label}, n + k * (1 + len(blocks)))

    @staticmethod
    def _perturbed_expert_ids(engine, records, it: int) -> list:
        """Each prompt's k demonstrations with one step's result changed (synthetic.corrupt), token ids."""
        rng = np.random.default_rng([engine.config.seed, it])
        modulus = engine.config.data.synthetic.modulus
        texts = [synthetic.corrupt(r["experts"][j % len(r["experts"])], rng, modulus=modulus)
                 for r in records for j in range(engine.num_experts)]
        return encode_responses(engine.tokenizer, texts, engine.response_len, engine.end_id)[0]

    def policy_batch(self, engine, batch):
        """`airl_dense_advantages` of the discriminator logits over each prompt's group: the n rollouts or
        (airl.experts_in_group) the rollouts and the k demonstrations (outcome 1; their logp_old are the
        current policy's, so their PPO ratio starts at 1)."""
        n, k, bsz = engine.num_rollouts, engine.num_experts, len(batch.records)
        traj, per_prompt, outcome, logits, logp_old = batch.rollouts, n, batch.outcome, batch.process, batch.logp_old
        extra = {} if batch.ref_logp is None else {"ref_logp": batch.ref_logp}
        if engine.config.airl.experts_in_group:
            traj, cat = with_experts(engine, batch.records, batch.rollouts, batch.keep)
            is_expert = cat(np.zeros(bsz * n), np.ones(bsz * k))[:, None] > 0
            current = engine.logp("policy", traj)
            logp_old = np.where(is_expert, current, cat(logp_old, np.zeros((bsz * k, engine.response_len), np.float32)))
            outcome = cat(outcome, np.ones(bsz * k, np.float32))
            logits = engine.token_rewards(traj, None)
            per_prompt = n + k
            if "ref_logp" in extra:  # KL to the reference (policy.kl_coef > 0) on every row of the group
                extra["ref_logp"] = engine.logp("ref", traj)
        group = np.repeat(np.arange(bsz), per_prompt).astype(np.int32)
        extra["logp_old"] = np.asarray(logp_old, np.float32)
        extra.update(estimate(engine, "airl_dense", traj, outcome, logits, group, logp_old))
        return traj, extra, per_prompt


register(AIRLDense())
