"""What an algorithm sees of the trainer: `Engine`, the one object the hooks in `algorithms/` receive.

A method reads the config and the batch shapes, and asks for computations on named models; it never reads
or assigns the trainer's state, optimisers, shardings or jitted programs. Every result comes back as host
(numpy) arrays or floats, except `token_rewards` and `advantages`: device arrays, which go on into the
estimator and the policy batch and reach the update without a copy to the host. `tests/test_layers.py`
checks that `algorithms/` names nothing else of it.

    engine.logp("policy" | "ref", rows)            [N, R] log-probs of the responses, chunked
    engine.values(rows)                            [N, R] PPO values of the policy's value head
    engine.token_rewards(rows, ref_logp=None)      [N, R] the PRM's token rewards r_phi(s_t, a_t), on the device
    engine.update_prm(loss, rows, extra, rows_per_prompt, count=None)   one PRM epoch -> mean metrics
    engine.prm_step(loss, rows, extra, n_micro)    one PRM optimiser step on one mini-batch -> its outputs
    engine.sampler(num_samples)(prompt_ids, rng, width)  completions by the current policy
    engine.score(records, texts)                   outcome rewards, gathered over processes
    engine.advantages(name, inputs)                an estimator of `algorithms/advantages.py`, on the device
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from repirl_jax.algorithms import advantages
from repirl_jax.algorithms.base import means
from repirl_jax.algorithms.batches import Traj
from repirl_jax.generation import sampling
from repirl_jax.runtime import distributed


class Engine:
    """The narrow interface of a `Trainer` for the hooks of an `algorithms.Algorithm`."""

    def __init__(self, trainer):
        self._trainer = trainer

    # -- facts -------------------------------------------------------------------------------------------

    @property
    def config(self):
        """The training config (read it; do not change it)."""
        return self._trainer.config

    @property
    def num_rollouts(self) -> int:
        """n: rollouts per prompt."""
        return self._trainer.n

    @property
    def num_experts(self) -> int:
        """Demonstrations per prompt (data.experts_per_prompt)."""
        return self._trainer.num_experts

    @property
    def prompt_len(self) -> int:
        """P: prompt slots of a row (left-padded)."""
        return self._trainer.P

    @property
    def response_len(self) -> int:
        """R: response slots of a row (right-padded)."""
        return self._trainer.R

    @property
    def tokenizer(self):
        return self._trainer.tokenizer

    @property
    def pad_id(self) -> int:
        return self._trainer.pad_id

    @property
    def end_id(self) -> int:
        """The token that ends a demonstration (the stop rule's first id)."""
        return self._trainer.end_id

    @property
    def step_delim_id(self) -> int:
        """The token that ends a reasoning step (steps.delimiter), or -1."""
        return self._trainer.step_delim_id

    # -- rows --------------------------------------------------------------------------------------------

    def prompt_arrays(self, records: Sequence[dict], repeat: int) -> tuple[np.ndarray, np.ndarray]:
        """([len(records) * repeat, P] prompt tokens, mask): each record's prompt repeated `repeat` times."""
        return self._trainer.prompt_arrays(records, repeat)

    def on_device(self, tree: Any) -> Any:
        """Host arrays -> global arrays split by rows over the data and fsdp axes (for a jitted function)."""
        return self._trainer.put_rows(tree)

    def minibatches(self, n_rows: int, rows_per_prompt: int, minibatch_prompts: int) -> list[np.ndarray]:
        """Row indices of consecutive mini-batches of `minibatch_prompts` prompts."""
        return self._trainer.minibatches(n_rows, rows_per_prompt, minibatch_prompts)

    # -- model computations (host arrays out) ------------------------------------------------------------

    def logp(self, model: str, rows: Traj) -> np.ndarray:
        """[N, R] log-probs of the response tokens under model "policy" (current) or "ref" (frozen)."""
        if model not in ("policy", "ref"):
            raise ValueError(f"logp of model {model!r}: expected 'policy' or 'ref'")
        t = self._trainer
        return t.logp_in_chunks(t.model_params() if model == "policy" else t.ref, rows)

    def values(self, rows: Traj) -> np.ndarray:
        """[N, R] the policy's value head at every response position (PPO)."""
        return self._trainer.values_in_chunks(rows)

    def token_rewards(self, rows: Traj, ref_logp=None):
        """[N, R] the PRM's token rewards (ref_logp [N, R]: the implicit head's reference log-probs), a device
        array split by rows (`distributed.to_host` copies it where a method needs the host)."""
        return self._trainer.rewards_in_chunks(rows, ref_logp, on_device=True)

    def advantages(self, name: str, inputs: advantages.AdvantageInputs):
        """(advantages [N, R], returns [N, R] or None) by estimator `name`, with the config's coefficients:
        device arrays (put them in the policy batch's `extra` as they are)."""
        return advantages.compute(name, inputs, self._trainer.advantage_params)

    # -- the PRM's optimiser -------------------------------------------------------------------------------

    def update_prm(self, loss: str, rows: Traj, extra: dict, rows_per_prompt: int, count=None) -> dict:
        """One epoch of PRM steps with the method's loss `loss` (a key of its `prm_losses`) over mini-batches
        of prm.minibatch_prompts prompts; `count` [N]: per-row normaliser counts (default: response tokens).
        Returns the mean of each step metric, named prm_*."""
        t, prm = self._trainer, self._trainer.config.prm
        agg = t.updates(t.prm_updates[loss], "prm", rows, extra, rows_per_prompt, prm.minibatch_prompts,
                        prm.micro_batch, {}, count=count)
        return means(agg)

    def prm_step(self, loss: str, rows: Traj, extra: dict, n_micro: int) -> dict:
        """One PRM optimiser step with loss `loss` on these rows as `n_micro` micro-batches; its host outputs
        (loss, grad norm, "finite", the loss's own metrics). Pass them to `record` to count the step."""
        t = self._trainer
        t.state, out = t.prm_updates[loss](t.state, t.put_micro((rows, extra), n_micro))
        return distributed.to_host(out)

    def record(self, out: dict, prefix: str, agg: dict) -> None:
        """Append a step's outputs to `agg` as prefix_key lists; counts (and stops on too many) non-finite steps."""
        self._trainer.record_step(out, prefix, agg)

    # -- generation and scoring ------------------------------------------------------------------------------

    def sampler(self, num_samples: int) -> Callable:
        """`sample(prompt_ids, rng, width)`: `num_samples` completions of each prompt by the policy as it is
        now (the sampler's weight copy is made once, here), with rollout.temperature / top_p, the one stop
        rule and at most R new tokens; prompts padded to `width`. Returns a host `sampling.SampleOutput`."""
        t = self._trainer
        scfg: sampling.SamplingConfig = t.sampling_config(num_samples=num_samples)
        params = t.sampler_params(t.model_params())

        def sample(prompt_ids: Sequence[Sequence[int]], rng, width: int):
            return distributed.to_host(t.generator(params, prompt_ids, scfg, rng, width=width))
        return sample

    def score(self, records: Sequence[dict], texts: Sequence[str]):
        """(outcome rewards [len(texts)], summed reward counters) of (record, response) pairs."""
        return self._trainer.score(records, texts)
