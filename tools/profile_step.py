"""Where our policy step's time goes, XLA op by XLA op: a jax.profiler trace of the jitted step, summed per op.

    python tools/profile_step.py [--size=S | --hf_dir=DIR] [--layers=N] [--vocab=V] [--batch=8 --seq=512] [--top=25]

The step is bench_train.py's loss and gradients (chunked log-probs, float32, no remat) on a random model of
--size's shape, or of a checkpoint's config (--hf_dir; random weights: the time does not depend on them),
with --layers decoder layers (default: the shape's own). It runs --repeats times under the profiler; each op's
time is its events' total per (profiled) step, over all the threads that ran it; an op run asynchronously (Eigen's
dots) counts from its dispatch to its "end:" event. Independent ops run side by side on XLA's threads, so the
column can sum to more than the wall time. Each op is printed with what it computes (its HLO
instruction, shapes included) and its share of the threads' busy time.
"""

import collections
import glob
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from bench_common import SHAPES, best_time, cpu_model  # noqa: E402

flags.DEFINE_enum("size", "S", ["XS", "S"], "Model shape (as in bench_train.py), unless --hf_dir.")
flags.DEFINE_string("hf_dir", None, "Take the model's shape from this checkpoint's config.json.")
flags.DEFINE_integer("layers", 0, "Decoder layers (0: the shape's own).")
flags.DEFINE_integer("vocab", 0, "Vocabulary size (0: the shape's own); a small one leaves the trunk's ops alone.")
flags.DEFINE_integer("batch", 8, "Rows.")
flags.DEFINE_integer("seq", 512, "Tokens per row.")
flags.DEFINE_integer("repeats", 3, "Profiled steps.")
flags.DEFINE_integer("top", 25, "Ops printed.")
FLAGS = flags.FLAGS


def model_config():
    import transformers
    if FLAGS.hf_dir:
        config = transformers.AutoConfig.from_pretrained(FLAGS.hf_dir)
    else:
        config = transformers.Qwen2Config(vocab_size=32000, tie_word_embeddings=True, max_position_embeddings=2048,
                                          **SHAPES[FLAGS.size])
    if FLAGS.vocab:
        config.vocab_size = FLAGS.vocab
        config.pad_token_id = config.bos_token_id = config.eos_token_id = 0
    if FLAGS.layers:
        config.num_hidden_layers = FLAGS.layers
        config.layer_types = config.layer_types[:FLAGS.layers] if getattr(config, "layer_types", None) else None
    return config


def main(argv):
    del argv
    import jax
    import jax.numpy as jnp
    import numpy as np
    import transformers

    from repirl_jax.checkpoints import hf
    from repirl_jax.models import logprobs

    config = model_config()
    with tempfile.TemporaryDirectory() as tmp:
        transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp)
        params, cfg = hf.load_hf_params(tmp, dtype="float32")
    cfg = cfg.replace(dtype="float32", remat="none")
    b, t = FLAGS.batch, FLAGS.seq
    tokens = np.random.RandomState(0).randint(0, min(cfg.vocab_size, 32000), size=(b, t)).astype(np.int32)
    prompt, pmask = jnp.asarray(tokens[:, :1]), jnp.ones((b, 1), jnp.int32)
    resp, rmask = jnp.asarray(tokens[:, 1:]), jnp.ones((b, t - 1), jnp.float32)

    def loss_fn(p):
        lp, _ = logprobs.response_logprobs(p, cfg, prompt, pmask, resp, rmask, chunk=128, with_entropy=False)
        return -(lp * rmask).sum() / rmask.sum()

    compiled = jax.jit(jax.value_and_grad(loss_fn)).lower(params).compile()
    hlo = {m.group(1): m.group(2) for m in re.finditer(r"^\s*(?:ROOT )?%([\w.-]+) = (.*?)(?:, metadata=.*)?$",
                                                         compiled.as_text(), re.M)}
    wall = best_time(lambda: jax.block_until_ready(compiled(params)), FLAGS.repeats)
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            for _ in range(FLAGS.repeats):
                jax.block_until_ready(compiled(params))
        data = jax.profiler.ProfileData.from_file(glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)[0])
    starts, ends, threads = collections.defaultdict(list), collections.defaultdict(list), set()
    for plane in data.planes:
        for line in plane.lines:
            for ev in line.events:
                if ev.name in hlo:  # the executable's ops (named as in its HLO), on whichever thread ran them
                    starts[ev.name].append((ev.start_ns, ev.end_ns))
                    threads.add(line.name)
                elif ev.name.startswith("end: ") and ev.name[5:] in hlo:
                    ends[ev.name[5:]].append(ev.end_ns)
    per_op = collections.Counter()
    for name, spans in starts.items():
        spans.sort()
        # An op XLA runs asynchronously (Eigen's dots) has a short start event where it is dispatched and an
        # "end: NAME" event where it completes: its time is from the one to the other.
        finish = sorted(ends[name]) if len(ends[name]) == len(spans) else [end for _, end in spans]
        per_op[name] = sum(f - start for (start, _), f in zip(spans, finish)) / 1e9 / FLAGS.repeats
    busy = sum(per_op.values())
    print(f"cpu: {cpu_model()}")
    print(f"{cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, mlp {cfg.intermediate_size}, vocab "
          f"{cfg.vocab_size}, batch {b} x {t}: step {wall:.3f} s (best of {FLAGS.repeats}, unprofiled), ops busy "
          f"{busy:.3f} s per step summed over the {len(threads)} threads that ran them")
    for name, seconds in per_op.most_common(FLAGS.top):
        print(f"{seconds * 1e3:9.1f} ms {100 * seconds / busy:5.1f}%  {name}: {hlo[name][:150]}")
    return 0


if __name__ == "__main__":
    app.run(main)
