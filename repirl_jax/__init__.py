"""repirl_jax: rePIRL (inverse-RL process rewards for LLM reasoning) in JAX/Flax for GPUs and TPUs.

Layers, each importing only the ones below it (`python tools/import_graph.py` checks it):
    launch, evaluate, convert, make_experts, real_models    the commands (cli, config: their flags)
    evaluation/     what a trained PRM and policy are measured by
    training/       Trainer (state, shardings, loop, update engine); Engine, all that a method sees of it
    algorithms/     the methods, their losses and advantages, the [prompt | response] rows
    checkpoints/    HF safetensors <-> params, our directories, orbax training state
    generation/     the sampler, continuous batching, the one pad + generate path, text completions
    rewards/        math, code and synthetic outcome rewards
    data/           benchmarks, prompt sets, the embedded synthetic task
    models/         Qwen2/2.5/3 and Llama decoders, heads, LoRA, chunked log-probs
    runtime/        backend dtype, the mesh and its one axis table, multi-host start-up
    errors          ConfigError
"""

__version__ = "0.1.0"
