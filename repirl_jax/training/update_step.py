"""One optimiser step of a model as one jitted program: micro-batch gradients accumulated by a `lax.scan`,
then one clipped AdamW update; a non-finite update is discarded inside the same program.

    step = update_step(loss_fn, "policy", make_optimizer(...), state_shardings, frozen)
    state, metrics = step(state, stacked_micro_batches)

`loss_fn(params, micro_batch) -> (loss, aux)` reads the model tree `state[name]`, or under LoRA the adapter
`state[name]` joined to its frozen base (`lora.join`; the base is an argument of the program, not donated,
and is not differentiated): the gradients and the optimiser state cover the trainable tree only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from repirl_jax.models import lora

# Per-micro-batch metrics already divided by the whole mini-batch's count (tokens, steps, kept rows): they add up.
ADDITIVE = frozenset({"pg_loss", "entropy", "clip_frac", "approx_kl", "kl_ref", "value_loss", "bc_nll",
                      "disc_acc", "step_acc", "prm_acc"})


def make_optimizer(lr: float, weight_decay: float, clip: float, warmup: int = 0, eps: float = 1e-8):
    """Global-norm clipping, then AdamW (METHOD.md: weight decay 0, clip 1.0 policy / 10 PRM)."""
    schedule = optax.linear_schedule(0.0, lr, warmup) if warmup else lr
    return optax.chain(optax.clip_by_global_norm(clip),
                       optax.adamw(schedule, b1=0.9, b2=0.999, eps=eps, weight_decay=weight_decay))


class WithFrozen:
    """A jitted step(state, batch, frozen) with the frozen LoRA base bound: called (and lowered) as step(state,
    batch), like the step of a model without adapters (frozen None)."""

    def __init__(self, step, frozen):
        self.step, self.frozen = step, frozen

    def __call__(self, state, batch):
        return self.step(state, batch, self.frozen)

    def lower(self, state, batch):
        return self.step.lower(state, batch, self.frozen)


def update_step(loss_fn, name: str, opt, state_shardings, frozen=None) -> WithFrozen:
    """The jitted update of state[name] (and state[name + "_opt"]) from stacked micro-batches [n_micro, ...]."""
    def update(state, stacked, frozen):
        params = state[name]

        def body(acc, mb):
            (loss, aux), g = jax.value_and_grad(lambda p: loss_fn(lora.join(frozen, p), mb), has_aux=True)(params)
            return (jax.tree.map(jnp.add, acc[0], g), acc[1] + loss), aux
        zeros = jax.tree.map(jnp.zeros_like, params)
        (grads, loss), aux = jax.lax.scan(body, (zeros, jnp.zeros((), jnp.float32)), stacked)
        gnorm = optax.global_norm(grads)
        updates, new_opt = opt.update(grads, state[f"{name}_opt"], params)
        new = optax.apply_updates(params, updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(gnorm) & jnp.isfinite(optax.global_norm(updates))
        keep = lambda a, b: jax.tree.map(lambda x, y: jnp.where(finite, x, y), a, b)  # noqa: E731
        aux = {k: (jnp.max(v) if k.endswith("_max") else jnp.sum(v) if k in ADDITIVE else jnp.mean(v))
               for k, v in aux.items()}
        return ({**state, name: keep(new, params), f"{name}_opt": keep(new_opt, state[f"{name}_opt"])},
                {"loss": loss, "grad_norm": gnorm, "finite": finite, **aux})
    return WithFrozen(jax.jit(update, donate_argnums=0, out_shardings=(state_shardings, None)), frozen)
