"""Calibrate a synthetic task variant: BC warm-up accuracy, and the oracle PRM's step-error AUROC on
held-out policy traces (the two numbers the demo's task must satisfy, issue 11 item 1).

    python tools/task_probe.py [--config=configs/demo.py] [--set=KEY=VALUE,...] [--oracle_steps=400]

Prints one line `probe ... bc_acc=<x> oracle_auroc=<x> ...` with timings (seconds, wall clock).
"""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

flags.DEFINE_string("config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "demo.py"),
                    "Config file.")
flags.DEFINE_list("set", [], "KEY=VALUE overrides (python literals), e.g. data.synthetic.num_steps=(6,6).")
flags.DEFINE_integer("oracle_steps", 400, "Oracle PRM training steps.")
flags.DEFINE_integer("oracle_train_prompts", 512, "Train prompts whose policy samples train the oracle.")
flags.DEFINE_integer("test_prompts", 256, "Test prompts (greedy accuracy, held-out traces).")
flags.DEFINE_float("oracle_lr", 1e-3, "Oracle PRM learning rate.")
FLAGS = flags.FLAGS


def apply_overrides(c, pairs):
    import ast
    for kv in pairs:
        key, value = kv.split("=", 1)
        node = c
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        try:
            v = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            v = value
        node[last] = v
    return c


def main(_):
    import jax
    import numpy as np

    from repirl_jax.checkpoints import run_dirs
    from repirl_jax.config import load_config_file
    from repirl_jax.evaluation import oracle_prm, prm_eval
    from repirl_jax.models import heads
    from repirl_jax.rewards.scorers import build_reward_fn
    from repirl_jax.runtime.sharding import make_mesh
    from repirl_jax.training import build, loop, train
    c = apply_overrides(load_config_file(FLAGS.config), FLAGS.set)
    c.mesh.update(data=1, fsdp=1, tensor=1, devices=1)
    t0 = time.time()
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    tok = run_dirs.build_tokenizer(c)
    train_set, _, test_set = build.build_datasets(c, tok)
    cfg = build.model_config(c, tok)
    reward_fn, _ = build_reward_fn(c)
    with tempfile.TemporaryDirectory() as wd:
        params = loop.warm_up(c, wd, mesh, cfg, tok, reward_fn, train_set, progress_bar=False)
    t_bc = time.time() - t0
    c2 = c.copy_and_resolve_references()
    c2.algo = "rloo"
    trainer = train.Trainer(c2, mesh, build.build_models(c2, cfg, mesh, params), tok, reward_fn, train_set)
    test = trainer.tokenize_set(test_set[:FLAGS.test_prompts], "test")
    acc = trainer.evaluate(test, c.train.eval_batch)["accuracy"]
    t1 = time.time()
    mod = c.data.synthetic.modulus
    tr_recs = trainer.train_set[:FLAGS.oracle_train_prompts]
    ro_tr = trainer.rollouts(tr_recs, jax.random.key(101))
    ro_te = trainer.rollouts(test, jax.random.key(202))
    tr_prompts = [r["prompt"] for r in tr_recs for _ in range(trainer.n)]
    te_prompts = [r["prompt"] for r in test for _ in range(trainer.n)]
    P, R = c.rollout.max_prompt_len, c.rollout.max_response_len
    rng = np.random.default_rng(0)
    pp, clean, bad = oracle_prm.corrupted_pairs(tr_recs, rng, mod)
    tr = oracle_prm.LabelledTraces.concat([
        oracle_prm.label_traces(tr_prompts, ro_tr["texts"], tok, P, R, mod),
        oracle_prm.label_traces(pp + pp, clean + bad, tok, P, R, mod)])
    te = oracle_prm.label_traces(te_prompts, ro_te["texts"], tok, P, R, mod)
    sample_acc = float(np.mean(reward_fn([r for r in test for _ in range(trainer.n)], ro_te["texts"])[0]))
    t_samp = time.time() - t1
    prm = {"trunk": jax.tree.map(lambda x: x.copy(), params), "head": heads.init_scalar_head(cfg, jax.random.key(3))}
    floor = prm_eval.step_error_auroc(te.prompts, te.texts,
                                      oracle_prm.per_trace_rewards(oracle_prm.score_traces(prm, cfg, te), te), mod)
    t2 = time.time()
    prm, losses_ = oracle_prm.train_oracle_prm(prm, cfg, tr, FLAGS.oracle_steps, batch=64, lr=FLAGS.oracle_lr)
    t_or = time.time() - t2
    res = prm_eval.step_error_auroc(te.prompts, te.texts,
                                    oracle_prm.per_trace_rewards(oracle_prm.score_traces(prm, cfg, te), te), mod)
    print(f"probe set={FLAGS.set} params={cfg.num_params()} bc_acc={acc:.3f} sample_acc={sample_acc:.3f} "
          f"oracle_auroc={res['auroc_all_steps']:.3f} oracle_first={res['auroc_first_error']:.3f} "
          f"floor_auroc={floor['auroc_all_steps']:.3f} steps={res['steps']} wrong={res['wrong_steps']} "
          f"loss_end={np.mean(losses_[-20:]):.3f} t_bc={t_bc:.0f} t_sample={t_samp:.0f} t_oracle={t_or:.0f}",
          flush=True)


if __name__ == "__main__":
    app.run(main)
