"""Training-step speed: our jitted policy step against a PyTorch step of the transformers model, one run.

    python tools/bench_train.py --size=XS|S [--batch=8 --seq=512] [--demo_iterations=0]

Both sides run the same model (random weights, copied from the torch model into ours), the same batch
(8 x 512 tokens), the same loss (token-mean next-token cross-entropy over all but the first position:
the shape of every policy loss here) and AdamW, in float32 on this machine's 2 cores, each timed after
a warm-up (best of --repeats, the two sides' timed steps alternating so that load from other jobs on a
shared machine hits both alike). The last line is `ratio_vs_torch=<torch seconds / our seconds>`.

--hf_dir=DIR: the step at a real checkpoint's shape and weights (e.g. Qwen2.5-Coder-0.5B: a 151,936-token
untied LM head), --batch x --seq random tokens of its vocabulary. The optimiser there is plain SGD on both
sides (--optimizer): two float32 copies of a 0.5B model with gradients and two Adam moments each would not
fit beside each other in this machine's 24 GiB; AdamW's update is elementwise, a small share of a step.
Both sides still hold a model, and in turn a step's activations (ours: 11.7 GB of temporaries at 4 x 512,
XLA's memory analysis; torch: ~9.5 GB): run it with REPIRL_KEEP_HOST_MEMORY=0, or glibc keeps each side's
freed peak for the other (host_memory.py) and the process passes 24 GiB (19.9 GB peak without).

It also prints the step's model FLOPs (`step_flops`: the same for both sides) and the rate each side reaches,
beside XLA's float32 matmul rate here: a step whose products run at that rate is as fast as this machine
allows, whichever framework runs it.

--demo_iterations=N also times N iterations of configs/demo.py as rePIRL and as RLOO (after one warm-up
iteration each, the BC warm-up skipped) and prints seconds per iteration and where the time goes.
"""

import functools
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from bench_common import SHAPES, best_times_interleaved, cpu_model, measure_machine  # noqa: E402

flags.DEFINE_enum("size", "XS", ["XS", "S"], "Model shape (as in bench_sampler.py).")
flags.DEFINE_integer("batch", 8, "Rows.")
flags.DEFINE_integer("seq", 512, "Tokens per row.")
flags.DEFINE_integer("repeats", 3, "Timed steps per side (best is reported).")
flags.DEFINE_integer("logp_chunk", 128, "Our log-prob chunk (positions per chunk).")
flags.DEFINE_integer("demo_iterations", 0, "Also time this many demo iterations, rePIRL vs RLOO.")
flags.DEFINE_string("hf_dir", None, "A real checkpoint (HF directory) instead of --size's random model.")
flags.DEFINE_enum("optimizer", "auto", ["auto", "adamw", "sgd"], "auto: sgd with --hf_dir, else adamw.")
flags.DEFINE_enum("remat", "none", ["none", "full", "dots"], "Our model's rematerialisation (cfg.remat).")
flags.DEFINE_bool("profile", False, "Also time the step's pieces on both sides: forward, forward + backward, the "
                  "trunk alone, the LM head + log-softmax alone, the optimiser update.")
FLAGS = flags.FLAGS

def step_flops(cfg, b: int, t: int) -> float:
    """Model FLOPs of one step of this loss, the same for both sides: 3 x the forward pass (the backward pass
    computes an input and a weight gradient per product), whose products are every layer's projections
    (2 per weight per token), causal attention (scores and values over the earlier keys: 2 * T^2 / 2 * D * 2 per
    head and row) and the LM head at the T - 1 predicted positions. Norms, RoPE and the softmaxes are left out."""
    e, h, k, d, m = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, \
        cfg.intermediate_size
    layer_weights = e * h * d + 2 * e * k * d + h * d * e + 3 * e * m
    forward = cfg.num_hidden_layers * (2 * b * t * layer_weights + 2 * b * h * t * t * d) + \
        2 * b * (t - 1) * e * cfg.vocab_size
    return 3.0 * forward


def bench_step():
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    import torch
    import transformers

    from repirl_jax.checkpoints import hf
    from repirl_jax.models import logprobs

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    if FLAGS.hf_dir:
        model = transformers.AutoModelForCausalLM.from_pretrained(FLAGS.hf_dir, dtype=torch.float32).train()
        params, cfg = hf.load_hf_params(FLAGS.hf_dir, dtype="float32")
        shape = os.path.basename(os.path.normpath(FLAGS.hf_dir))
    else:
        config = transformers.Qwen2Config(vocab_size=32000, tie_word_embeddings=True, max_position_embeddings=2048,
                                          **SHAPES[FLAGS.size])
        model = transformers.Qwen2ForCausalLM(config).train()
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            params, cfg = hf.load_hf_params(tmp)
        shape = f"shape {FLAGS.size}"
    cfg = cfg.replace(dtype="float32", remat=FLAGS.remat)
    b, t = FLAGS.batch, FLAGS.seq
    tokens = np.random.RandomState(0).randint(0, min(cfg.vocab_size, 151643), size=(b, t)).astype(np.int32)
    sgd = FLAGS.optimizer == "sgd" or (FLAGS.optimizer == "auto" and FLAGS.hf_dir)

    # Ours: the trainer's layout (1 prompt token, t - 1 response tokens), chunked log-probs, AdamW (or SGD).
    opt = optax.sgd(1e-5) if sgd else optax.adamw(1e-5)
    prompt, pmask = jnp.asarray(tokens[:, :1]), jnp.ones((b, 1), jnp.int32)
    resp, rmask = jnp.asarray(tokens[:, 1:]), jnp.ones((b, t - 1), jnp.float32)

    def loss_fn(p):
        lp, _ = logprobs.response_logprobs(p, cfg, prompt, pmask, resp, rmask, chunk=FLAGS.logp_chunk,
                                           with_entropy=False)
        return -(lp * rmask).sum() / rmask.sum()

    @functools.partial(jax.jit, donate_argnums=(0, 1))  # as the trainer's update: the old state's buffers reused
    def step(p, s):
        loss, g = jax.value_and_grad(loss_fn)(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    # Committed to the device, as the step's outputs are: AdamW's uncommitted step count would otherwise make
    # the first timed call compile the step a second time (5.8 s of a 0.2 s step at --size=XS --repeats=1).
    state = jax.device_put({"p": params, "s": opt.init(params)}, jax.devices()[0])

    def ours():
        state["p"], state["s"], loss = step(state["p"], state["s"])
        loss.block_until_ready()

    topt = torch.optim.SGD(model.parameters(), lr=1e-5) if sgd else \
        torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0)
    ids = torch.tensor(tokens, dtype=torch.long)

    def theirs():
        logits = model(input_ids=ids).logits[:, :-1].float()
        lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
        (-lp.mean()).backward()
        topt.step()
        topt.zero_grad(set_to_none=True)  # as our step: no gradients held between steps

    t_ours, t_torch = best_times_interleaved([ours, theirs], FLAGS.repeats)
    print(f"cpu: {cpu_model()}")
    print(f"{shape}: {cfg.num_params() / 1e6:.1f}M parameters, float32, batch {b} x {t} tokens, "
          f"{'SGD' if sgd else 'AdamW'}, our remat={cfg.remat}, log-prob chunk {FLAGS.logp_chunk}")
    flops, (_, peak) = step_flops(cfg, b, t), measure_machine()
    print(f"model FLOPs per step {flops / 1e12:.2f} T; XLA's float32 matmul peak here {peak / 1e9:.0f} GFLOP/s "
          f"(2048^3, measured after the steps): {flops / peak:.2f} s/step at that rate")
    print(f"ours: {t_ours:.2f} s/step ({b * t / t_ours:.0f} tok/s, {flops / t_ours / 1e9:.0f} GFLOP/s); torch: "
          f"{t_torch:.2f} s/step ({b * t / t_torch:.0f} tok/s, {flops / t_torch / 1e9:.0f} GFLOP/s)")
    if FLAGS.profile:  # the step's ratio first (the last line repeats it): a long profile may be stopped
        print(f"ratio_vs_torch={t_torch / t_ours:.2f}", flush=True)
        profile_step(model, state, cfg, tokens, opt, topt, loss_fn)
    return t_torch / t_ours


def profile_step(model, state, cfg, tokens, opt, topt, loss_fn):
    """Seconds of the policy step's pieces on both sides (best of --repeats, interleaved), with the same
    inputs as the step: where our step's time goes against PyTorch's."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    import torch

    from repirl_jax.models import logprobs, qwen

    b, t = tokens.shape
    ids = torch.tensor(tokens, dtype=torch.long)
    p = state["p"]
    prompt, pmask = jnp.asarray(tokens[:, :1]), jnp.ones((b, 1), jnp.int32)
    resp, rmask = jnp.asarray(tokens[:, 1:]), jnp.ones((b, t - 1), jnp.float32)
    weight = jnp.asarray(np.random.RandomState(1).normal(size=(cfg.hidden_size,)).astype(np.float32))
    tweight = torch.tensor(np.asarray(weight))

    def trunk_loss(p):  # the decoder without the LM head: a fixed projection of every final hidden state
        return (logprobs.sequence_hidden(p, cfg, prompt, pmask, resp, rmask) @ weight).mean()

    hidden = jax.block_until_ready(jax.jit(lambda p: logprobs.sequence_hidden(p, cfg, prompt, pmask, resp, rmask))(p))
    head = jax.block_until_ready(qwen.lm_head_rows(p, cfg) + 0)

    def head_loss(h, w):  # the LM head + log-softmax at the target, chunked as the trainer does
        lp = logprobs.chunked_logprobs(h[:, :-1], w, resp, FLAGS.logp_chunk, with_entropy=False,
                                       remat=cfg.remat != "none")[0]
        return -lp.mean()

    f_fwd = jax.jit(loss_fn)
    f_grad = jax.jit(jax.value_and_grad(loss_fn))
    f_trunk = jax.jit(jax.value_and_grad(trunk_loss))
    f_head = jax.jit(jax.value_and_grad(head_loss, argnums=(0, 1)))
    f_opt = jax.jit(lambda g, s, p: optax.apply_updates(p, opt.update(g, s, p)[0]))
    th = torch.tensor(np.asarray(hidden)).requires_grad_(True)
    tw = model.lm_head.weight.detach().clone().requires_grad_(True)

    def block(x):
        return jax.block_until_ready(x)

    def torch_fwd():
        with torch.no_grad():
            logits = model(input_ids=ids).logits[:, :-1].float()
            torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).mean().item()

    def torch_grad(keep=False):  # the gradients are dropped after the timing, as ours are (memory at 0.5B)
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=ids).logits[:, :-1].float()
        (-torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).mean()).backward()
        if not keep:
            model.zero_grad(set_to_none=True)

    def torch_trunk():
        model.zero_grad(set_to_none=True)
        (model.model(input_ids=ids).last_hidden_state @ tweight).mean().backward()
        model.zero_grad(set_to_none=True)

    def torch_head():
        th.grad, tw.grad = None, None
        lp = torch.log_softmax(th[:, :-1] @ tw.T, -1).gather(-1, ids[:, 1:, None])
        (-lp.mean()).backward()

    def torch_opt():
        topt.step()

    # The update's gradients are made just before its piece: at 0.5B a model-sized array held through the other
    # pieces (and torch's gradients left from its backward pass) would not fit beside their activations.
    grads = {}
    pieces = [
        ("forward: loss only", lambda: block(f_fwd(p)), torch_fwd),
        ("forward + backward: loss and gradients", lambda: block(f_grad(p)), torch_grad),
        ("trunk alone (no LM head), forward + backward", lambda: block(f_trunk(p)), torch_trunk),
        ("LM head + log-softmax alone, forward + backward", lambda: block(f_head(hidden, head)), torch_head),
        ("optimiser update alone", lambda: block(f_opt(grads["g"], state["s"], p)), torch_opt),
    ]
    print(f"profile of one step (best of {FLAGS.repeats}, seconds; ratio = torch / ours):")
    for name, ours_fn, torch_fn in pieces:
        if torch_fn is torch_opt and FLAGS.hf_dir:
            # Both sides' gradients held beside two models and a backward pass's temporaries: killed for memory
            # at 0.5B in 24 GiB (f5f2a87). SGD's update is one elementwise pass over the parameters.
            print(f"  {name:48s} not timed with --hf_dir (both sides' gradients at once do not fit in memory)")
            continue
        if torch_fn is torch_opt:  # every parameter's gradient in place for the update, on both sides
            grads["g"] = block(jax.jit(jax.grad(loss_fn))(p))
            torch_grad(keep=True)
        t_ours, t_torch = best_times_interleaved([ours_fn, torch_fn], FLAGS.repeats)
        print(f"  {name:48s} ours {t_ours:7.2f}  torch {t_torch:7.2f}  ratio {t_torch / t_ours:.2f}")


def bench_demo(n):
    import json

    import numpy as np

    from repirl_jax import launch
    from repirl_jax.config import load_config_file
    out = {}
    for algo in ("repirl", "rloo"):
        c = load_config_file(os.path.join(os.path.dirname(__file__), "..", "configs", "demo.py"))
        c.algo, c.advantage.c = algo, (c.advantage.c if algo == "repirl" else 0.0)
        c.warmup_bc.steps = 0
        c.train.update(max_iterations=n + 1, eval_every=10**6, checkpoint_every=10**6)
        with tempfile.TemporaryDirectory() as wd:
            launch.run(c, wd, progress_bar=False)
            rows = [json.loads(line) for line in open(os.path.join(wd, "metrics.jsonl"))][1:]
        phases = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k.startswith("time_")}
        out[algo] = phases
        print(f"demo {algo}: {phases['time_total']:.2f} s/iteration; " +
              ", ".join(f"{k[5:]} {v:.2f}" for k, v in phases.items() if k != "time_total"))
    print(f"demo rePIRL / RLOO seconds per iteration: {out['repirl']['time_total'] / out['rloo']['time_total']:.2f}")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    ratio = bench_step()
    if FLAGS.demo_iterations:
        bench_demo(FLAGS.demo_iterations)
    print(f"ratio_vs_torch={ratio:.2f}")
    return 0


if __name__ == "__main__":
    app.run(main)
