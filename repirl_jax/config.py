"""The training config: every knob with the paper's default (METHOD.md), as an ml_collections ConfigDict.

Config files in configs/ start from `default_config()` and change what they need; any field can be
overridden on the command line: `--config.policy.lr=1e-6`.
"""

import importlib.util
import os

import ml_collections

from repirl_jax import algorithms


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """`get_config()` of a config file (configs/NAME.py), as `--config=path` would give it."""
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def lora_config() -> ml_collections.ConfigDict:
    """LoRA adapter settings of one model (policy.lora, prm.lora); rank 0 = full fine-tuning."""
    return ml_collections.ConfigDict(dict(rank=0, alpha=16.0, targets=("q", "k", "v", "o", "gate", "up", "down")))


def default_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.algo = "repirl"  # any registered method (repirl_jax/algorithms/): repirl | rloo | grpo | ppo | prime | bc |
    #                    kto | airl_dense | prl | math_shepherd

    _model_fields(config)
    _method_fields(config)
    _run_fields(config)
    return config


def _model_fields(config: ml_collections.ConfigDict) -> None:
    """The policy and the PRM: checkpoints, architecture overrides, optimisers."""
    # Policy model: a local HF or repirl_jax directory, or (path "") a random init of `preset`.
    config.model = ml_collections.ConfigDict(dict(
        path="", preset="tiny-qwen3", vocab_size=0,  # vocab_size > 0 overrides the preset's (tokenizer size)
        dtype="bfloat16", param_dtype="float32", remat="none", max_positions=32768,
        attn_block=128,  # query positions per causal attention block without a cache (0: one block)
        attn_impl="auto",  # that attention's kernel: auto (cuDNN on a GPU for bf16, else blocked) | blocked | cudnn
        hidden_size=0, num_layers=0, num_heads=0, num_kv_heads=0, head_dim=0, intermediate_size=0))

    config.prm = ml_collections.ConfigDict(dict(
        path="",  # "" = the policy's initial parameters (paper: same base checkpoint)
        head="scalar",  # scalar | implicit (PRIME) | likelihood (r = log pi_phi(a_t | s_t); rePIRL option, issue 11)
        beta=0.05,  # implicit head: r = beta * (log pi_phi - log pi_ref)
        lr=3e-8, weight_decay=0.0, clip=10.0, adam_eps=1e-8,
        minibatch_prompts=32, micro_batch=8,
        frozen=False,  # True: no PRM updates (test-time training). Not "update": ConfigDict has that method
        lora=lora_config()))


def _method_fields(config: ml_collections.ConfigDict) -> None:
    """The methods' coefficients: the IRL objective, the policy loss, advantages, steps, baselines."""
    config.irl = ml_collections.ConfigDict(dict(
        pseudo_expert=True,  # correct rollouts join the positives (False: paper D.2 ablation)
        weight_scope="batch",  # batch (Algorithm 1) | prompt
        importance_weights=True,  # False: uniform weights (paper Figure 2 ablation)
        # Beyond the paper (issue 11; defaults = the paper): losses.transform_log_weights / truncate_weights.
        log_weight_norm="none",  # none | per_token (log w / response length)
        weight_temperature=1.0,  # log w / temperature before the softmax
        weight_cap=0.0,  # > 0: w_hat truncated at cap / |N|, renormalised
        prm_epochs=1))  # passes of the PRM step over each iteration's batch (paper: 1)

    config.policy = ml_collections.ConfigDict(dict(
        lr=5e-7, weight_decay=0.0, clip=1.0, warmup_steps=0, epochs=1, adam_eps=1e-8,
        minibatch_prompts=32, micro_batch=8,
        clip_low=0.2, clip_high=0.2, dual_clip=3.0, entropy_coef=0.001, kl_coef=0.0,
        lora=lora_config()))

    config.advantage = ml_collections.ConfigDict(dict(
        estimator="rloo",  # rloo | grpo | ppo
        process_mode="token",  # token | sequence
        c=0.05,  # process-reward coefficient (0.05 Qwen2.5-3B, 0.1 Qwen3-4B; 0 = plain RLOO)
        outcome_weight=1.0))  # 0 = PRM-only training (paper section 4.4)

    # Reasoning steps (PRL, Math-Shepherd, min-step reranking): a step ends at a response token equal to
    # `delimiter` (one token of the tokenizer), or with every > 0 at every `every`-th token; always at the
    # last response token.
    config.steps = ml_collections.ConfigDict(dict(delimiter="\n", every=0))
    # Dense reasoning reward by adversarial IRL (papers/dense_reasoning_reward_airl_2510.01857.txt): the
    # discriminator is the scalar-head PRM (prm.* sets its optimiser and batches).
    config.airl = ml_collections.ConfigDict(dict(
        label_smoothing=0.1,
        reward_min=-10.0, reward_max=10.0,  # the discriminator logit is clipped to this range as a reward
        gamma=0.9,  # discounted suffix sum of the group-normalised token rewards
        std_eps=1e-4,
        perturbed_negatives=False,  # + one-step-corrupted demonstrations as negatives (synthetic task only)
        experts_in_group=False))  # demonstrations join each prompt's policy group (and the policy step)
    config.prl = ml_collections.ConfigDict(dict(eta=200.0))  # papers/prl_2601.10201.txt; steps from config.steps
    config.shepherd = ml_collections.ConfigDict(dict(
        k=4,  # completions per step prefix, sampled by the current policy
        label="soft",  # soft: fraction of correct completions | hard: any correct
        prefixes_per_call=32))  # step prefixes per sampler call (each with k samples)

    config.ppo = ml_collections.ConfigDict(dict(gamma=1.0, lam=1.0, value_clip=0.2, value_coef=0.5, whiten=True))
    config.kto = ml_collections.ConfigDict(dict(beta=0.1))


def _run_fields(config: ml_collections.ConfigDict) -> None:
    """Sampling, data, rewards, the BC warm-up, the loop and the device mesh."""
    config.rollout = ml_collections.ConfigDict(dict(
        n=4, temperature=1.0, top_p=1.0, max_prompt_len=1535, max_response_len=3000, prompts_per_call=32,
        # The sampler's copy of the policy weights, made on the devices before each rollout phase (no host
        # round trip): "train" = the training arrays as they are (fsdp-sharded: every decode step gathers
        # them); "replicated" = a full compute-dtype copy on every device (decoding is then data-parallel,
        # with no weight traffic per step); "tensor" = the copy sharded over the tensor axis only.
        weights="train",
        # 0: each call decodes prompts_per_call prompts as one static batch (it runs until its longest row
        # ends). N > 0: continuous batching (repirl_jax/continuous.py): an iteration's prompts form one queue
        # decoded on N cache rows, a finished row taking the next (prompt, sample); per-prompt keys.
        continuous_rows=0))

    config.data = ml_collections.ConfigDict(dict(
        train="", val="", tokenizer="",  # paths ("synthetic" for the embedded task; "tfds:NAME[:SPLIT]")
        prompt_field="prompt", answer_field="ground_truth", experts_field="experts",
        prompt_format="chat_math",  # raw | chat_math | chat_code | chat_synthetic
        domain="math",
        prompts_per_iter=128, experts_per_prompt=4,
        long_prompts="skip",  # skip | truncate (counted and reported either way)
        on_bad_row="error",  # error | skip (counted and reported)
        val_limit=256,
        filter=ml_collections.ConfigDict(dict(enabled=True, low=0.2, high=0.8)),
        synthetic=ml_collections.ConfigDict(dict(n_train=2000, n_val=200, n_test=500, noise=0.0,
                                                 noise_kind="carried",  # carried | corrected (synthetic/task.py)
                                                 num_steps=(4, 4), ops="+-*", max_addend=99, max_factor=9,
                                                 modulus=100))))

    config.reward = ml_collections.ConfigDict(dict(kind="math", timeout_s=10.0, workers=2))

    config.warmup_bc = ml_collections.ConfigDict(dict(steps=0, prompts=0, batch_prompts=16, lr=1e-3))

    config.train = ml_collections.ConfigDict(dict(
        max_iterations=2, checkpoint_every=50, keep=3, eval_every=50, eval_batch=64,
        logp_chunk=512, inference_batch_multiple=4, max_nonfinite_in_a_row=5, async_checkpoint=True,
        max_empty_iterations=10,  # stop after this many iterations in a row that keep no prompt (0: never)
        early_signal_k=0))  # > 0 (methods with a PRM): early-signal check k iterations after all-fail prompts

    config.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1, devices=0))  # devices 0: all


def paper_config(model: str = "qwen25_3b", algo: str = "repirl") -> ml_collections.ConfigDict:
    """The paper's settings (METHOD.md section 6, Table 4) for Qwen2.5-3B-Instruct or Qwen3-4B-Base.

    Model and data paths are local directories to fill in (`--config.model.path=...`); with model.path
    empty the preset's architecture is randomly initialised (tests, memory plans).
    """
    config = default_config()
    config.algo = algo
    if model == "qwen25_3b":
        config.model.preset, config.advantage.c, config.prm.lr = "qwen2.5-3b", 0.05, 3e-8
    elif model == "qwen3_4b":
        config.model.preset, config.advantage.c, config.prm.lr = "qwen3-4b", 0.1, 3e-8
    else:
        raise ValueError(f"model={model!r}: expected qwen25_3b or qwen3_4b")
    config.model.dtype, config.model.param_dtype, config.model.remat = "bfloat16", "float32", "full"
    config.model.attn_block = 1024  # 5 blocks at 4,535 tokens: few unrolled blocks per layer to compile
    config.data.prompts_per_iter, config.data.experts_per_prompt = 128, 4
    config.policy.minibatch_prompts, config.prm.minibatch_prompts = 32, 32
    # Memory (tools/memory_plan.py, README "Scale out"): on 8 devices, tensor parallelism over all 8 with the
    # paper's micro-batch of 1 row (4,535 tokens) keeps every program within 44 GiB per device; an fsdp=8
    # mesh with a micro-batch of 8 rows (one per device) needs 65 GiB in the PRM step. More hosts add data
    # parallelism (data=-1); then set micro_batch = mesh.data so each data group gets its own row.
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = -1, 1, 8
    config.policy.micro_batch, config.prm.micro_batch = 1, 1
    config.rollout.n, config.rollout.max_prompt_len, config.rollout.max_response_len = 4, 1535, 3000
    config.rollout.prompts_per_call = 32
    config.rollout.weights = "replicated"  # bf16 copy: 6.2 GB (3B) / 8.0 GB (4B) per device, no per-step all-gather
    # 7,000 prompts per domain, 2 epochs: 2 * 7000 / 128 = 110 iterations per stage.
    config.train.max_iterations, config.train.checkpoint_every, config.train.eval_every = 110, 10, 10
    config.data.train, config.data.val = "", ""  # local JSONL/Parquet: prompt, ground_truth, experts
    config.reward.kind, config.data.prompt_format, config.data.domain = "math", "chat_math", "math"
    # Two stages: math, then code starting from the math model (paper section 4.1); launch.run_stages.
    config.stages = ml_collections.ConfigDict(dict(
        enabled=False,  # True: WORKDIR/math with data.train, then WORKDIR/code with stages.code_train
        code_train="", code_val="",  # the code stage's data (fields as for math; ground_truth = tests)
    ))
    # The method's own settings (repirl_jax/algorithms/<algo>.py): what defines it, then the paper's values.
    method = algorithms.get(algo)
    algorithms.apply_settings(config, {**method.required, **method.paper})
    return config


# One line per field: what `python -m repirl_jax.launch --show_config` prints beside each value. A test keeps
# it complete (every field of default_config() and paper_config() has a line, and no line names a field that
# does not exist), so it cannot drift from the configs above.
FIELD_HELP = {
    "seed": "seed of the initialisation, data order and sampling",
    "algo": "training algorithm: repirl | rloo | grpo | ppo | prime | bc | kto | airl_dense | prl | math_shepherd",
    "model.path": "local HF, repirl_jax params or training-run directory of the policy ('' = random init of preset)",
    "model.preset": "architecture when model.path is empty (tiny-qwen3, qwen2.5-3b, qwen3-4b, ...)",
    "model.vocab_size": "> 0: vocabulary size of a preset model (0: the tokenizer's, rounded up to 8)",
    "model.dtype": "compute dtype: bfloat16 | float32 (float32 is used where the backend lacks bf16 dots)",
    "model.param_dtype": "dtype of parameters created by init (loaded checkpoints keep theirs)",
    "model.remat": "rematerialisation: none | full (recompute each layer in the backward pass)",
    "model.max_positions": "longest sequence the model is built for",
    "model.attn_block": "query positions per causal attention block without a cache (0: one block)",
    "model.attn_impl": "attention kernel without a cache: auto (cuDNN flash on GPUs where it applies, else blocked) | blocked | cudnn",
    "model.hidden_size": "> 0 overrides the preset's hidden size",
    "model.num_layers": "> 0 overrides the preset's number of layers",
    "model.num_heads": "> 0 overrides the preset's attention heads",
    "model.num_kv_heads": "> 0 overrides the preset's key/value heads",
    "model.head_dim": "> 0 overrides the preset's head dimension",
    "model.intermediate_size": "> 0 overrides the preset's MLP width",
    "prm.path": "PRM initialisation: '' = the policy's initial parameters, or a model / training-run directory",
    "prm.head": "scalar (a reward head on the trunk) | implicit (PRIME: beta * log-ratio to the reference) | "
                "likelihood (r = log pi_phi(a_t | s_t) of the PRM's own LM head; rePIRL only)",
    "prm.beta": "implicit head: r = beta * (log pi_phi - log pi_ref)",
    "prm.lr": "PRM learning rate",
    "prm.weight_decay": "PRM AdamW weight decay",
    "prm.clip": "PRM gradient-norm clip",
    "prm.adam_eps": "PRM Adam epsilon",
    "prm.minibatch_prompts": "prompts per PRM optimiser step",
    "prm.micro_batch": "rows per PRM forward/backward pass (memory only; gradients are accumulated exactly)",
    "prm.frozen": "True: no PRM updates (test-time training with a fixed PRM)",
    "prm.lora.rank": "LoRA rank of the PRM's adapter on the frozen base (0: the PRM trains every weight); with the "
                     "policy's also LoRA the two share one base in memory",
    "prm.lora.alpha": "PRM LoRA alpha (the adapter's product is scaled by alpha / rank)",
    "prm.lora.targets": "projections the PRM adapter modifies: any of q k v o gate up down",
    "irl.pseudo_expert": "correct rollouts join the PRM's positives (False: the paper's D.2 ablation)",
    "irl.weight_scope": "importance weights normalised over the batch (Algorithm 1) | per prompt",
    "irl.importance_weights": "False: uniform weights over the negatives (paper Figure 2 ablation)",
    "irl.log_weight_norm": "beyond the paper: none (Eq. 4) | per_token (log-weights divided by response length)",
    "irl.weight_temperature": "beyond the paper: log-weights divided by this before normalising (1 = Eq. 4)",
    "irl.weight_cap": "beyond the paper: > 0 truncates each weight at cap/|N| and renormalises (0 = off)",
    "irl.prm_epochs": "passes of the rePIRL PRM step over each iteration's batch (paper: 1)",
    "policy.lr": "policy learning rate",
    "policy.weight_decay": "policy AdamW weight decay",
    "policy.clip": "policy gradient-norm clip",
    "policy.warmup_steps": "linear learning-rate warm-up steps",
    "policy.epochs": "passes over each iteration's rollouts",
    "policy.adam_eps": "policy Adam epsilon",
    "policy.minibatch_prompts": "prompts per policy optimiser step",
    "policy.micro_batch": "rows per policy forward/backward pass (memory only)",
    "policy.clip_low": "PPO-style ratio clip below 1",
    "policy.clip_high": "PPO-style ratio clip above 1",
    "policy.dual_clip": "dual-clip bound for negative advantages",
    "policy.entropy_coef": "entropy bonus coefficient",
    "policy.kl_coef": "KL penalty to the reference policy (0: no reference needed)",
    "policy.lora.rank": "LoRA rank of the policy's adapter on the frozen base (0: full fine-tuning); the reference "
                        "model is then the base itself",
    "policy.lora.alpha": "policy LoRA alpha (the adapter's product is scaled by alpha / rank)",
    "policy.lora.targets": "projections the policy adapter modifies: any of q k v o gate up down",
    "advantage.estimator": "rloo | grpo | ppo",
    "advantage.process_mode": "process reward per token | summed per sequence",
    "advantage.c": "process-reward coefficient (0.05 Qwen2.5-3B, 0.1 Qwen3-4B; 0 = outcome only)",
    "advantage.outcome_weight": "weight of the outcome reward (0 = PRM-only training)",
    "steps.delimiter": "a reasoning step ends at this response token (one token of the tokenizer)",
    "steps.every": "> 0: a step ends every this many tokens instead",
    "airl.label_smoothing": "AIRL discriminator label smoothing",
    "airl.reward_min": "lower clip of the discriminator logit used as reward",
    "airl.reward_max": "upper clip of the discriminator logit used as reward",
    "airl.gamma": "discount of the suffix sum of group-normalised token rewards",
    "airl.std_eps": "epsilon of the group normalisation",
    "airl.perturbed_negatives": "one-step-corrupted demonstrations as extra negatives (synthetic task only)",
    "airl.experts_in_group": "demonstrations join each prompt's policy group",
    "prl.eta": "PRL: the process term is -(1/eta) * sum of future log-ratios",
    "shepherd.k": "Math-Shepherd: completions per step prefix",
    "shepherd.label": "soft (fraction of correct completions) | hard (any correct)",
    "shepherd.prefixes_per_call": "step prefixes per sampler call",
    "ppo.gamma": "PPO discount",
    "ppo.lam": "PPO GAE lambda",
    "ppo.value_clip": "PPO value-function clip",
    "ppo.value_coef": "PPO value-loss coefficient",
    "ppo.whiten": "whiten PPO advantages",
    "kto.beta": "KTO beta",
    "rollout.n": "rollouts per prompt (a prompt's RLOO/GRPO group)",
    "rollout.temperature": "sampling temperature of the rollouts",
    "rollout.top_p": "nucleus threshold of the rollouts",
    "rollout.max_prompt_len": "prompt tokens (longer prompts: data.long_prompts)",
    "rollout.max_response_len": "response tokens",
    "rollout.prompts_per_call": "prompts per sampler call (a fixed shape)",
    "rollout.weights": "sampler's weight copy: train (as sharded) | replicated | tensor",
    "rollout.continuous_rows": "0: static batches of prompts_per_call prompts; N: continuous batching on N rows",
    "data.train": "training prompts: JSONL / Parquet / tfds:NAME[:SPLIT] / synthetic",
    "data.val": "validation prompts (same formats; '' = none)",
    "data.tokenizer": "tokenizer directory ('' = model.path's; synthetic for the embedded task)",
    "data.prompt_field": "prompt field of the data rows",
    "data.answer_field": "gold answer (or tests) field of the data rows",
    "data.experts_field": "expert demonstrations field (a list of responses)",
    "data.prompt_format": "raw | chat_math | chat_code | chat_synthetic (chat template + the domain's instruction)",
    "data.domain": "math | code | synthetic",
    "data.prompts_per_iter": "prompts drawn per iteration (paper 128)",
    "data.experts_per_prompt": "demonstrations per prompt in the PRM batch (paper 4)",
    "data.long_prompts": "over-long prompts: skip | truncate (counted either way)",
    "data.on_bad_row": "bad data rows (also lines that are not JSON): error | skip (counted)",
    "data.val_limit": "first N validation prompts",
    "data.filter.enabled": "keep only prompts whose rollout accuracy is within [low, high]",
    "data.filter.low": "lowest rollout accuracy of a kept prompt",
    "data.filter.high": "highest rollout accuracy of a kept prompt",
    "data.synthetic.n_train": "synthetic task: training prompts",
    "data.synthetic.n_val": "synthetic task: validation prompts",
    "data.synthetic.n_test": "synthetic task: test prompts",
    "data.synthetic.noise": "synthetic task: fraction of corrupted expert demonstrations",
    "data.synthetic.noise_kind": "synthetic task: carried (the slip carries to a wrong answer) | corrected (redone next line)",
    "data.synthetic.num_steps": "synthetic task: (min, max) operations per chain",
    "data.synthetic.ops": "synthetic task: operators used",
    "data.synthetic.max_addend": "synthetic task: largest addend",
    "data.synthetic.max_factor": "synthetic task: largest factor",
    "data.synthetic.modulus": "synthetic task: arithmetic modulus",
    "reward.kind": "outcome reward: math (math-verify) | code (sandboxed tests) | synthetic",
    "reward.timeout_s": "time limit per graded response",
    "reward.workers": "grading worker processes",
    "warmup_bc.steps": "behaviour-cloning warm-up steps before RL (0: none)",
    "warmup_bc.prompts": "first N training prompts whose experts the warm-up clones (0: all)",
    "warmup_bc.batch_prompts": "prompts per warm-up step",
    "warmup_bc.lr": "warm-up learning rate",
    "train.max_iterations": "iterations of Algorithm 1",
    "train.checkpoint_every": "checkpoint every N iterations (and at the last)",
    "train.keep": "checkpoints kept besides the best",
    "train.eval_every": "validation accuracy every N iterations",
    "train.eval_batch": "prompts per validation sampler call",
    "train.logp_chunk": "rows per log-prob chunk in inference passes",
    "train.inference_batch_multiple": "inference batches are this many training micro-batches",
    "train.max_nonfinite_in_a_row": "stop after this many non-finite updates in a row",
    "train.async_checkpoint": "write checkpoints in the background",
    "train.max_empty_iterations": "stop after this many iterations in a row that keep no prompt (0: never)",
    "train.early_signal_k": "> 0, methods with a PRM: prompts whose rollouts all fail are re-tried greedily k "
                            "iterations later; WORKDIR/early_signal.jsonl and summary early_signal_auroc (0: off)",
    "mesh.data": "data-parallel axis size (-1: the remaining devices)",
    "mesh.fsdp": "fully-sharded axis size (-1: the remaining devices)",
    "mesh.tensor": "tensor-parallel axis size",
    "mesh.devices": "use the first N devices (0: all)",
    "stages.enabled": "True: a math stage, then a code stage from its final policy (WORKDIR/math, WORKDIR/code)",
    "stages.code_train": "the code stage's training prompts",
    "stages.code_val": "the code stage's validation prompts",
}


def describe(config: ml_collections.ConfigDict, prefix: str = "") -> list[tuple[str, object, str]]:
    """(dotted field name, value, one-line meaning) of every field of `config` (sorted by name)."""
    out = []
    for key, value in config.items():
        name = prefix + key
        if isinstance(value, ml_collections.ConfigDict):
            out += describe(value, name + ".")
        else:
            out.append((name, value, FIELD_HELP.get(name, "")))
    return out


def format_fields(config: ml_collections.ConfigDict) -> str:
    """What `--show_config` prints: per field `--config.NAME=VALUE  meaning [default: X]` (the default of
    default_config(), shown where the config's value differs)."""
    defaults = {n: v for n, v, _ in describe(default_config())}
    rows = []
    for n, v, h in describe(config):
        note = f" [default: {defaults[n]!r}]" if n in defaults and defaults[n] != v else ""
        rows.append((f"--config.{n}={v!r}" if isinstance(v, str) else f"--config.{n}={v}", h + note))
    width = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{width}}  {h}" for a, h in rows)
