"""rePIRL (METHOD.md, Algorithm 1): the scalar-head PRM is learned by inverse RL from the demonstrations
(Eq. 3-5: positives = demonstrations and, with irl.pseudo_expert, correct rollouts; negatives = failed
rollouts, importance-weighted), and its token rewards are the process reward of the policy advantage.

The PRM step is exact under micro-batching: the importance weights carry no gradient, so L_phi is linear in
the trajectory scores with fixed coefficients (w_hat on negatives, -1/|P| on positives). With one
micro-batch per mini-batch the loss is computed in one pass ("single_pass"); with several, a forward pass
computes the coefficients and the accumulated gradient of sum coef * rbar ("main") equals grad L_phi."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from repirl_jax.algorithms import losses
from repirl_jax.algorithms.base import Algorithm, ConfigError, means, register, with_experts
from repirl_jax.algorithms.batches import take
from repirl_jax.runtime import distributed

IRL_STATS = ("ess", "num_pos", "num_neg", "rbar_pos", "rbar_neg", "max_weight")


def shift_invariant(prm):
    """L_phi is unchanged by adding a constant to every token reward, so the head's bias gets a zero
    gradient up to rounding; it is held fixed (at its zero init) rather than letting Adam turn that
    rounding into steps of ~lr whose sign depends on the reduction order (mesh, micro-batching). A likelihood
    PRM (prm.head=likelihood: a whole Qwen model, r = log pi_phi) has no bias and is returned as it is."""
    if "head" not in prm:
        return prm
    return {**prm, "head": {**prm["head"], "bias": jax.lax.stop_gradient(prm["head"]["bias"])}}


def weight_options(config) -> dict:
    """The importance-weight options beyond the paper (losses.irl_weights; defaults = the paper's Eq. 4)."""
    return dict(log_weight_norm=config.irl.log_weight_norm, weight_temperature=float(config.irl.weight_temperature),
                weight_cap=float(config.irl.weight_cap))


@functools.partial(jax.jit, static_argnums=(6, 7, 8, 9, 10))
def irl_coefficients(r, mask, logp_old, pos, neg, group, scope: str, importance_weights: bool,
                     log_weight_norm: str = "none", weight_temperature: float = 1.0, weight_cap: float = 0.0):
    """(coef [B], RePIRLLoss): coef = w_hat on negatives, -1/|P| on positives (Eq. 4-5)."""
    opts = dict(log_weight_norm=log_weight_norm, weight_temperature=weight_temperature, weight_cap=weight_cap)
    out = losses.repirl_reward_loss(r, mask, logp_old, pos, neg, group, scope, importance_weights, **opts)
    R, _ = losses.trajectory_scores(r, mask)
    w_hat = losses.irl_weights(R, logp_old, mask, neg, group, scope, importance_weights, **opts)
    return jnp.where(neg > 0, w_hat, 0.0) - pos / jnp.maximum(pos.sum(), 1.0), out


class RePIRL(Algorithm):
    name = "repirl"
    needs_prm = True
    needs_experts = True
    experts_in_data = True
    required = {"prm.head": "scalar"}
    allowed = {"prm.head": ("likelihood",)}  # beyond the paper: r = log pi_phi(a_t | s_t) (issue 11)

    def validate(self, config) -> None:
        super().validate(config)
        if int(config.irl.prm_epochs) < 1:
            raise ConfigError(f"irl.prm_epochs={config.irl.prm_epochs}: must be >= 1")
        if config.irl.log_weight_norm not in ("none", "per_token"):
            raise ConfigError(f"irl.log_weight_norm={config.irl.log_weight_norm!r}: expected none or per_token")
        if not float(config.irl.weight_temperature) > 0 or float(config.irl.weight_cap) < 0:
            raise ConfigError(f"irl.weight_temperature={config.irl.weight_temperature} must be > 0 and "
                              f"irl.weight_cap={config.irl.weight_cap} >= 0")

    def prm_rows_per_prompt(self, config):
        return config.rollout.n + config.data.experts_per_prompt

    def prm_losses(self, config, cfg, act, token_rewards):
        def coef_loss(prm, mb):
            """sum_j coef_j rbar_j: with coef = w_hat on N and -1/|P| on P this is L_phi (weights are constants)."""
            traj, extra = mb
            _, rbar = losses.trajectory_scores(token_rewards(shift_invariant(prm), traj, None), traj.response_mask)
            return jnp.sum(extra["coef"] * rbar), {}

        def single_pass(prm, mb):
            """L_phi on a whole mini-batch in one pass (the weights are computed inside, without gradient)."""
            traj, extra = mb
            r = token_rewards(shift_invariant(prm), traj, None)
            out = losses.repirl_reward_loss(r, traj.response_mask, extra["logp_old"], extra["pos"], extra["neg"],
                                            extra["group"], config.irl.weight_scope, config.irl.importance_weights,
                                            **weight_options(config))
            return out.loss, {f"irl_{k}": getattr(out, k) for k in IRL_STATS}
        return {"main": coef_loss, "single_pass": single_pass}

    def reward_model_step(self, engine, batch):
        """irl.prm_epochs epochs (paper: 1) over PRM mini-batches; rows grouped by prompt: its n rollouts, then
        its k demonstrations."""
        config, n, k, bsz = engine.config, engine.num_rollouts, engine.num_experts, len(batch.records)
        agg: dict = {}
        per_prompt = n + k
        traj, cat = with_experts(engine, batch.records, batch.rollouts, batch.keep)
        is_roll = cat(np.ones(bsz * n), np.zeros(bsz * k)).astype(bool)
        lp_old = cat(batch.logp_old, np.zeros((bsz * k, engine.response_len), np.float32)).astype(np.float32)
        correct = cat(batch.outcome, np.ones(bsz * k, np.float32)) >= 1.0
        group = np.repeat(np.arange(bsz), per_prompt).astype(np.int32)
        row_keep = np.repeat(batch.keep, per_prompt)
        pos = ((~is_roll | (is_roll & correct & bool(config.irl.pseudo_expert))) * row_keep).astype(np.float32)
        neg = ((is_roll & ~correct) * row_keep).astype(np.float32)
        batches = engine.minibatches(traj.prompt.shape[0], per_prompt, config.prm.minibatch_prompts)
        for idx in [idx for _ in range(int(config.irl.prm_epochs)) for idx in batches]:
            part, local_group = take(traj, idx), group[idx] - group[idx].min()
            n_micro = len(idx) // config.prm.micro_batch
            if pos[idx].sum() + neg[idx].sum() == 0:
                agg["prm_skipped_empty"] = agg.get("prm_skipped_empty", 0) + 1
                continue
            if n_micro == 1:  # one pass: weights and loss from the same forward
                extra = {"logp_old": lp_old[idx], "pos": pos[idx], "neg": neg[idx], "group": local_group}
                out = engine.prm_step("single_pass", part, extra, 1)
                for key in [k_ for k_ in out if k_.startswith("irl_")]:
                    agg.setdefault(key, []).append(float(np.asarray(out.pop(key))))
                agg.setdefault("irl_loss", []).append(float(np.asarray(out["loss"])))
            else:
                r = engine.token_rewards(part, None)
                inputs = (r, part.response_mask, lp_old[idx], pos[idx], neg[idx], local_group)
                opts = weight_options(config)
                coef, irl = distributed.to_host(irl_coefficients(
                    *engine.on_device(inputs), config.irl.weight_scope, bool(config.irl.importance_weights),
                    opts["log_weight_norm"], opts["weight_temperature"], opts["weight_cap"]))
                for key in IRL_STATS:
                    agg.setdefault(f"irl_{key}", []).append(float(getattr(irl, key)))
                agg.setdefault("irl_loss", []).append(float(irl.loss))
                out = engine.prm_step("main", part, {"coef": np.asarray(coef)}, n_micro)
            engine.record(out, "prm", agg)
        return means(agg)


register(RePIRL())
