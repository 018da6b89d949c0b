"""repirl_jax: rePIRL (inverse-RL process rewards for LLM reasoning) in JAX/Flax for GPUs and TPUs."""

__version__ = "0.1.0"
