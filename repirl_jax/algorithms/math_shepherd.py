"""Math-Shepherd (MCTS-style step labels): every step of the rollouts is completed shepherd.k times from its
prefix by the current policy and labelled by the completions' outcomes (losses.shepherd_labels); the
scalar-head PRM is trained by per-step BCE on the step-end logit (losses.step_bce_loss); its step scores
sigmoid(z) at the step ends are the process reward."""

import time

import jax
import jax.numpy as jnp
import numpy as np

from repirl_jax.algorithms import losses
from repirl_jax.algorithms.base import Algorithm, ConfigError, register, step_ends


class MathShepherd(Algorithm):
    name = "math_shepherd"
    needs_prm = True
    uses_steps = True
    step_reduce = "last"  # its PRM is trained at the step-end token alone
    required = {"prm.head": "scalar"}
    paper = {"advantage.c": 0.1}

    def validate(self, config):
        super().validate(config)
        if config.shepherd.label not in ("soft", "hard") or config.shepherd.k < 1:
            raise ConfigError(f"shepherd.label={config.shepherd.label!r}, shepherd.k={config.shepherd.k}: "
                              "need soft|hard, k >= 1")
        if config.rollout.max_prompt_len + 2 * config.rollout.max_response_len > config.model.max_positions:
            raise ConfigError("algo=math_shepherd completes step prefixes (prompt + up to max_response_len tokens) "
                              "by up to max_response_len more: max_prompt_len + 2 * max_response_len must not "
                              f"exceed model.max_positions={config.model.max_positions}")

    def prm_losses(self, config, cfg, act, token_rewards):
        def step_loss(prm, mb):
            """Per-step BCE on the step-end logits; num_tokens here counts the mini-batch's step ends."""
            traj, extra = mb
            return losses.step_bce_loss(token_rewards(prm, traj, None), extra["ends"], extra["labels"],
                                        extra["num_tokens"])
        return {"main": step_loss}

    def reward_model_step(self, engine, batch):
        """Label every step of the (kept) rollouts by completions, then one PRM epoch of per-step BCE."""
        ends = step_ends(engine, batch.rollouts)
        rng = jax.random.fold_in(jax.random.fold_in(jax.random.key(engine.config.seed), batch.it), 1)
        labels, stats = self.labels(engine, batch, ends, rng)
        metrics = engine.update_prm("main", batch.rollouts, {"ends": ends, "labels": labels}, engine.num_rollouts,
                                    count=ends.sum(axis=1))
        return {**metrics, **stats}

    def labels(self, engine, batch, ends, rng):
        """Step labels [B, R] at the step ends: for each step but the last, k completions by the current
        policy from the prefix (prompt + response up to and including the step end), scored by the outcome
        reward (the whole response kept within rollout.max_response_len), labelled by
        `losses.shepherd_labels` (shepherd.label); the last step's label is the rollout's own outcome.
        Also returns the cost: prefixes, sampled tokens, seconds."""
        config, n, R = engine.config, engine.num_rollouts, engine.response_len
        kk, per_call = config.shepherd.k, config.shepherd.prefixes_per_call
        records, response = batch.records, batch.rollouts.response
        t0 = time.perf_counter()
        labels = ends * np.asarray(batch.outcome, np.float32)[:, None]
        prefixes = [(row, int(t)) for row in range(ends.shape[0]) for t in np.flatnonzero(ends[row])[:-1]]
        correct, sampled = np.zeros((len(prefixes), kk), np.float32), 0
        sample = engine.sampler(num_samples=kk)
        for s in range(0, len(prefixes), per_call):
            chunk = prefixes[s:s + per_call]
            ids = [list(records[row // n]["prompt_ids"]) + response[row, :t + 1].tolist() for row, t in chunk]
            ids += [ids[0]] * (per_call - len(chunk))  # one shape for every call
            out = sample(ids, jax.random.fold_in(rng, s), width=engine.prompt_len + R)
            texts, recs = [], []
            for j, (row, t) in enumerate(chunk):
                for q in range(kk):
                    i = j * kk + q
                    sampled += int(out.lengths[i])
                    kept = min(int(out.lengths[i]), R - t - 1)  # the whole response stays within R
                    body = response[row, :t + 1].tolist() + out.tokens[i, :kept].tolist()
                    texts.append(engine.tokenizer.decode(body, skip_special_tokens=True))
                    recs.append(records[row // n])
            scores, _ = engine.score(recs, texts)
            correct[s:s + len(chunk)] = (np.asarray(scores, np.float32) >= 1.0).reshape(len(chunk), kk)
        step_labels = losses.shepherd_labels(correct, config.shepherd.label)
        for (row, t), v in zip(prefixes, step_labels):
            labels[row, t] = v
        stats = {"shepherd_prefixes": float(len(prefixes)), "shepherd_sampled_tokens": float(sampled),
                 "shepherd_label_mean": float(step_labels.mean()) if len(prefixes) else 0.0,
                 "time_shepherd_completions": time.perf_counter() - t0}
        return labels, stats

    def process_rewards(self, engine, batch):
        """The step scores sigmoid(z) at the step ends, 0 elsewhere."""
        z = engine.token_rewards(batch.rollouts, batch.ref_logp)
        return (1.0 / (1.0 + jnp.exp(-z))) * step_ends(engine, batch.rollouts)


register(MathShepherd())
