"""PRM quality against true step labels (issue 11 item 2): every reward model scored on the same held-out
policy traces of the demo task, between a ceiling and a floor.

    python tools/prm_quality.py [--seeds=0,1,2] [--iterations=20] [--oracle_steps=400] [--out=results/prm_quality]

Per seed: the demo's BC warm-up (configs/demo.py, or --warmup=DIR/warmup of an earlier run of the same
seed), then the held-out traces: n = rollout.n samples (T = 1) of the BC policy on the first --test_prompts
test prompts, plus per test prompt its clean reference solution and a copy with one corrupted step
(`synthetic.corrupt`). Reward models, each from the BC trunk:
  oracle        the BC model trained with the labeller's labels (`oracle_prm`; the ceiling), on BC samples and
                clean/corrupted pairs of TRAIN prompts: --oracle_head=scalar (a scalar head on the trunk),
                likelihood (the BC policy itself, z_t = log-odds of its token probability) or prefix (the BC
                policy, z = scale * its mean log-prob over the prefix + bias, at the step ends)
  repirl        --iterations of the demo's rePIRL (the paper's scalar head, importance weights, batch scope)
  repirl_uniform, repirl_prompt     the same with uniform weights / prompt-scope weights
  repirl_likelihood                 the same with prm.head=likelihood (r_t = log pi_phi(a_t | s_t), beyond the paper)
  math_shepherd, airl_dense, prime  --iterations of those methods (configs as in tools/reproduce.py)
  --variant NAME:KEY=VALUE;...      more learned models: the config with these overrides (rePIRL by default)
  policy_logp   no training: the BC policy's own log-prob of each token as its reward (a zero-shot verifier)
  position      no model: token reward -t (falls along the response), the position confound's baseline
  floor         the BC trunk with an untrained (random) head
The oracle's targets are at the step-end tokens by default (--oracle_targets); it trains on BC samples of
--oracle_train_prompts train prompts and on the reference solutions of every train prompt, clean and
corrupted: half with each step's result changed w.p. --oracle_corrupt_rate (not carried: local errors), half
with one slip carried on consistently. --curve_every=K adds learning curves (every K iterations; the oracle
every 10K steps) to results.json.
Metrics on the held-out traces: step-error AUROC over every step of the policy samples under four readouts
of a step's score from the token rewards (`synthetic.per_step`): prefix (the default headline, --readout):
the mean token reward of the response prefix the step ends, i.e. rbar_phi of that prefix, the trajectory
score L_phi is written in, and a score of the whole prefix, which is what a step's true-chain label judges;
last: the step's last token (for a scalar head, the hidden state that has read the prefix); mean and min
over the step's own tokens. Also the first-error AUROC (first wrong step against the correct steps before
it), the within-position AUROC (`prm_eval.within_position_auroc`: correct vs wrong steps at the same step
index, which the position confound cannot inflate) and the clean-vs-corrupted pair accuracy
(`prm_eval.pair_accuracy`), all under the headline readout.
Mean +- std over seeds; writes OUT/table.md and OUT/results.json. The last line is
`oracle_auroc=<x> repirl_auroc=<x> floor_auroc=<x>` (step-error AUROC under the headline readout, means over
seeds). Its repirl is the rePIRL row --headline_repirl names (default repirl_likelihood, the best rePIRL PRM
measured; `repirl` for the paper's scalar head); the line before it says which, and gives the paper head's.
"""

import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
METHODS = {
    "repirl": {"algo": "repirl"},
    "repirl_uniform": {"algo": "repirl", "irl.importance_weights": False},
    "repirl_prompt": {"algo": "repirl", "irl.weight_scope": "prompt"},
    "repirl_likelihood": {"algo": "repirl", "prm.head": "likelihood"},
    "math_shepherd": {"algo": "math_shepherd", "advantage.c": 0.1, "prm.micro_batch": 128,
                      "shepherd.prefixes_per_call": 128, "shepherd.k": 2},
    "airl_dense": {"algo": "airl_dense", "advantage.c": 1.0, "advantage.outcome_weight": 1.0,
                   "airl.perturbed_negatives": True, "prm.micro_batch": 128},
    "prime": {"algo": "prime", "prm.head": "implicit", "prm.micro_batch": 128},
}


def parse_variants(specs) -> dict:
    """{name: overrides} from --variant NAME:KEY=VALUE;KEY=VALUE (algo defaults to repirl)."""
    out = {}
    for spec in specs:
        name, sep, body = spec.partition(":")
        pairs = [kv.split("=", 1) for kv in body.split(";") if kv.strip()]
        if not sep or not name or any(len(kv) != 2 for kv in pairs):
            raise app.UsageError(f"--variant={spec!r}: expected NAME:KEY=VALUE[;KEY=VALUE...]")
        if name in METHODS or name in ("oracle", "floor"):
            raise app.UsageError(f"--variant={spec!r}: {name!r} is a built-in name")
        out[name] = {"algo": "repirl", **{k.strip(): v.strip() for k, v in pairs}}
    return out


ORDER = ("oracle", *METHODS, "policy_logp", "position", "floor")
READOUTS = ("last", "mean", "min", "prefix")

flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
flags.DEFINE_integer("iterations", 20, "Training iterations per learned reward model.")
flags.DEFINE_integer("oracle_steps", 400, "Oracle PRM optimiser steps (batch 64).")
flags.DEFINE_float("oracle_lr", 1e-3, "Oracle PRM learning rate.")
flags.DEFINE_integer("oracle_train_prompts", 512, "Train prompts whose BC samples train the oracle.")
flags.DEFINE_integer("oracle_pair_prompts", 0, "Train prompts whose reference solutions, clean and corrupted (half "
                     "with local errors, half with one carried slip), also train the oracle (0: every train prompt).")
flags.DEFINE_float("oracle_corrupt_rate", 0.4, "Per-step corruption rate of the oracle's local-error traces.")
flags.DEFINE_enum("oracle_head", "prefix", ["scalar", "likelihood", "prefix"], "The oracle's head "
                  "(oracle_prm.token_logits): a scalar head on the BC trunk; the BC policy itself with z_t = the "
                  "log-odds of its token probability; or the BC policy with z_t = scale * (mean log-prob of the "
                  "prefix through t) + bias (prefix: pair it with --oracle_targets=step_end).")
flags.DEFINE_enum("readout", "prefix", list(READOUTS), "The step score of the headline AUROC (the "
                  "last line and the table's first column): the step's last token, its mean or minimum token reward, "
                  "or the mean token reward of the response prefix the step ends.")
flags.DEFINE_enum("oracle_targets", "step_end", ["step_end", "all"], "Oracle BCE targets at the step-end tokens "
                  "(where steps are scored) or at every response token.")
flags.DEFINE_integer("test_prompts", 128, "Test prompts for the held-out traces (a multiple of rollout.prompts_per_call).")
flags.DEFINE_list("methods", list(METHODS), "Learned reward models to score.")
flags.DEFINE_enum("headline_repirl", "repirl_likelihood", [m for m in METHODS if m.startswith("repirl")],
                  "The rePIRL row the last line reports as repirl_auroc (repirl: the paper's scalar head).")
flags.DEFINE_multi_string("variant", [], "NAME:KEY=VALUE[;KEY=VALUE...]: one more learned reward model, the demo "
                          "config with these overrides (e.g. 'repirl_e4:irl.prm_epochs=4;prm.lr=1e-3'); repeatable.")
flags.DEFINE_integer("curve_every", 0, "Also score every learned model (oracle: every 10x this many steps) every "
                     "this many iterations: a learning curve in results.json (0: final scores only).")
flags.DEFINE_string("config", os.path.join(ROOT, "configs", "demo.py"), "Task/model config.")
flags.DEFINE_list("set", [], "KEY=VALUE config overrides (python literals), applied to every run.")
flags.DEFINE_string("warmup", "", "A BC warm-up directory (hf params dir) to use for every seed instead of training one.")
flags.DEFINE_string("out", "results/prm_quality", "Output directory.")
flags.DEFINE_string("from_results", "", "Train nothing: print the table and last line of an earlier run's "
                    "results.json (its flags, but --headline_repirl).")
FLAGS = flags.FLAGS
SAVED_FLAGS = ("seeds", "iterations", "oracle_steps", "oracle_head", "oracle_targets", "readout", "test_prompts",
               "methods", "set", "variant")


def set_keys(c, pairs):
    import ast
    for key, value in pairs:
        node = c
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        if isinstance(value, str):
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                pass
        node[last] = value
    return c


def scores(prompts, texts, rewards, pairs, pair_rewards, modulus):
    """All metrics of one reward model's token rewards on the held-out traces."""
    from repirl_jax.evaluation import prm_eval
    by = {red: prm_eval.step_error_auroc(prompts, texts, rewards, modulus, red) for red in READOUTS}
    head = by[FLAGS.readout]
    pp, clean, bad = pairs
    n = len(pp)
    return {"auroc": head["auroc_all_steps"], **{f"auroc_{red}": by[red]["auroc_all_steps"] for red in READOUTS},
            "auroc_within_position": head["auroc_within_position"], "auroc_first_error": head["auroc_first_error"],
            "pair_acc": prm_eval.pair_accuracy(pp, clean, bad, pair_rewards[:n], pair_rewards[n:], modulus,
                                               FLAGS.readout),
            "steps": head["steps"], "wrong_steps": head["wrong_steps"]}


def run_seed(seed: int, learned: dict, log) -> dict:
    """Every reward model of one seed: floor, policy_logp, oracle, then the `learned` ones ({name: overrides})."""
    import jax
    import numpy as np

    from repirl_jax.checkpoints import hf, run_dirs
    from repirl_jax.config import load_config_file
    from repirl_jax.evaluation import oracle_prm
    from repirl_jax.models import heads
    from repirl_jax.rewards.scorers import build_reward_fn
    from repirl_jax.runtime.sharding import make_mesh
    from repirl_jax.training import build, loop, train
    base = set_keys(load_config_file(FLAGS.config), [kv.split("=", 1) for kv in FLAGS.set])
    base.seed = seed
    base.mesh.update(data=1, fsdp=1, tensor=1, devices=1)
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    tok = run_dirs.build_tokenizer(base)
    train_set, _, test_set = build.build_datasets(base, tok)
    cfg = build.model_config(base, tok)
    reward_fn, _ = build_reward_fn(base)
    mod = base.data.synthetic.modulus
    P, R = base.rollout.max_prompt_len, base.rollout.max_response_len
    t = time.time()
    if FLAGS.warmup:
        bc_params = hf.load_params_dir(FLAGS.warmup, mesh=mesh, cfg=cfg)[0]
    else:
        with tempfile.TemporaryDirectory() as wd:
            bc_params = loop.warm_up(base, wd, mesh, cfg, tok, reward_fn, train_set, progress_bar=False)
    log(f"seed {seed}: BC warm-up {time.time() - t:.0f} s")

    # Held-out traces: BC samples on test prompts, and clean / one-step-corrupted reference pairs.
    c_ro = base.copy_and_resolve_references()
    c_ro.algo = "rloo"
    sampler = train.Trainer(c_ro, mesh, build.build_models(c_ro, cfg, mesh, bc_params), tok, reward_fn, train_set)
    test = sampler.tokenize_set(test_set[:FLAGS.test_prompts], "test")
    ro = sampler.rollouts(test, jax.random.key(1000 + seed))
    prompts = [r["prompt"] for r in test for _ in range(sampler.n)]
    texts = list(ro["texts"])
    pairs = oracle_prm.corrupted_pairs(test, np.random.default_rng(seed), mod)
    pair_prompts, pair_texts = pairs[0] + pairs[0], pairs[1] + pairs[2]
    held = oracle_prm.label_traces(prompts, texts, tok, P, R, mod)
    held_pairs = oracle_prm.label_traces(pair_prompts, pair_texts, tok, P, R, mod)
    sample_acc = float(np.mean(reward_fn([r for r in test for _ in range(sampler.n)], texts)[0]))
    out = {"bc_sample_accuracy": sample_acc}

    def score_scalar(prm):
        r = oracle_prm.per_trace_rewards(oracle_prm.score_traces(prm, cfg, held), held)
        rp = oracle_prm.per_trace_rewards(oracle_prm.score_traces(prm, cfg, held_pairs), held_pairs)
        return scores(prompts, texts, r, pairs, rp, mod)

    fresh = lambda: {"trunk": jax.tree.map(lambda x: x.copy(), bc_params),  # noqa: E731
                     "head": heads.init_scalar_head(cfg, jax.random.fold_in(jax.random.key(seed), 3))}
    out["floor"] = score_scalar(fresh())
    copy_bc = lambda: jax.tree.map(lambda x: x.copy(), bc_params)  # noqa: E731
    fresh_oracle = {"scalar": fresh, "likelihood": copy_bc,
                    "prefix": lambda: oracle_prm.init_prefix_oracle(copy_bc())}[FLAGS.oracle_head]
    # Zero-shot reference: the BC policy's own log-prob of each token as its reward (no training).
    policy_lp = lambda tr_: oracle_prm.per_trace_rewards(oracle_prm.policy_logprobs(bc_params, cfg, tr_), tr_)  # noqa: E731
    out["policy_logp"] = scores(prompts, texts, policy_lp(held), pairs, policy_lp(held_pairs), mod)
    log(f"seed {seed}: policy_logp {out['policy_logp']}")
    # The confound: a "reward" that only falls along the response (wrong steps sit late in a trace).
    position = lambda tr_: [-np.arange(len(t), dtype=np.float64) for t in tr_.texts]  # noqa: E731
    out["position"] = scores(prompts, texts, position(held), pairs, position(held_pairs), mod)
    log(f"seed {seed}: floor {out['floor']}")

    # Oracle: supervised labels on BC samples of train prompts (+ their clean / corrupted references).
    if FLAGS.oracle_steps == 0:
        log(f"seed {seed}: oracle skipped (--oracle_steps=0)")
    else:
        out["oracle"] = oracle_scores(sampler, cfg, tok, P, R, mod, fresh_oracle, score_scalar, log, seed)
    del sampler
    return run_learned(out, learned, base, mesh, cfg, tok, reward_fn, train_set, bc_params, prompts, texts, pairs,
                       pair_prompts, pair_texts, mod, log, seed)


def oracle_scores(sampler, cfg, tok, P, R, mod, fresh, score_scalar, log, seed) -> dict:
    """Train the oracle PRM (from `fresh()`) on labelled traces of train prompts and score it."""
    import jax
    import numpy as np

    from repirl_jax.evaluation import oracle_prm
    t = time.time()
    tr_recs = sampler.train_set[:FLAGS.oracle_train_prompts]
    ro_tr = sampler.rollouts(tr_recs, jax.random.key(2000 + seed))
    pair_recs = sampler.train_set[:FLAGS.oracle_pair_prompts or len(sampler.train_set)]
    half = len(pair_recs) // 2
    rng_pairs = np.random.default_rng(10_000 + seed)
    # half: every step corrupted w.p. --oracle_corrupt_rate, not carried (local errors); half: one slip
    # carried on consistently (a policy's error and its consequences)
    tp, tc, _ = oracle_prm.corrupted_pairs(pair_recs[:half], rng_pairs, mod)
    tb = [oracle_prm.corrupt_each(x, rng_pairs, FLAGS.oracle_corrupt_rate, mod) for x in tc]
    tp2, tc2, tb2 = oracle_prm.corrupted_pairs(pair_recs[half:], rng_pairs, mod, propagate=True)
    tp, tc, tb = tp + tp2, tc + tc2, tb + tb2
    tr = oracle_prm.LabelledTraces.concat([
        oracle_prm.label_traces([r["prompt"] for r in tr_recs for _ in range(sampler.n)], ro_tr["texts"], tok, P, R,
                                mod),
        oracle_prm.label_traces(tp + tp, tc + tb, tok, P, R, mod)])
    curve = []

    def progress(step, loss, params):
        point = {"step": step, "train_loss": loss}
        if FLAGS.curve_every and step % (10 * FLAGS.curve_every) == 0:
            point.update(score_scalar(params))
        curve.append(point)
        log(f"seed {seed}: oracle step {step} " + " ".join(f"{k}={v:.3f}" for k, v in point.items()
                                                            if isinstance(v, float)))
    log(f"seed {seed}: oracle training set {len(tr)} traces ({time.time() - t:.0f} s)")
    oracle, loss_log = oracle_prm.train_oracle_prm(fresh(), cfg, tr, FLAGS.oracle_steps, 64, FLAGS.oracle_lr, seed,
                                                   log=progress, log_every=50, targets_at=FLAGS.oracle_targets)
    res = {**score_scalar(oracle), "train_loss_end": float(np.mean(loss_log[-20:])), "time_s": time.time() - t,
           "curve": curve}
    log(f"seed {seed}: oracle " + str({k: v for k, v in res.items() if k != "curve"}))
    return res


def run_learned(out, learned, base, mesh, cfg, tok, reward_fn, train_set, bc_params, prompts, texts, pairs,
                pair_prompts, pair_texts, mod, log, seed) -> dict:
    """Train and score each learned reward model from a copy of the BC parameters."""
    import jax
    import numpy as np

    from repirl_jax.evaluation import reports
    from repirl_jax.training import build, train
    for name, overrides in learned.items():
        t = time.time()
        c = set_keys(base.copy_and_resolve_references(), overrides.items())
        c.train.max_iterations = FLAGS.iterations
        # a copy per method: the trainer's jitted steps donate (delete) the parameter buffers they are given
        own = jax.tree.map(lambda x: x.copy(), bc_params)
        trainer = train.Trainer(c, mesh, build.build_models(c, cfg, mesh, own), tok, reward_fn, train_set)
        ess, curve = [], []

        def score_now(tr_=trainer):
            r = reports.trainer_text_rewards(tr_, prompts, texts)
            rp = reports.trainer_text_rewards(tr_, pair_prompts, pair_texts)
            return scores(prompts, texts, r, pairs, rp, mod)
        for it in range(1, FLAGS.iterations + 1):
            m = trainer.iteration(it)
            if "irl_ess" in m:
                ess.append(m["irl_ess"])
            if FLAGS.curve_every and it % FLAGS.curve_every == 0 and it < FLAGS.iterations:
                curve.append({"iteration": it, **score_now()})
                log(f"seed {seed}: {name} iteration {it} auroc={curve[-1]['auroc']:.3f}")
        out[name] = {**score_now(), "time_s": time.time() - t, "overrides": {k: str(v) for k, v in overrides.items()}}
        if curve:
            out[name]["curve"] = curve
        if ess:
            out[name]["irl_ess_mean"] = float(np.mean(ess))
        log(f"seed {seed}: {name} " + str({k: v for k, v in out[name].items() if k != "curve"}))
        del trainer
    return out


def summarise(per_seed: dict, names) -> tuple[str, dict]:
    import numpy as np
    others = [red for red in READOUTS if red != FLAGS.readout]
    keys = ("auroc", *[f"auroc_{red}" for red in others], "auroc_within_position", "auroc_first_error", "pair_acc")
    agg = {}
    rows = [f"| reward model | step-error AUROC ({FLAGS.readout}) | " + " | ".join(f"({red})" for red in others)
            + " | within-position AUROC | first-error AUROC | clean-vs-corrupted pair accuracy |", "|---" * (len(keys) + 1) + "|"]
    for name in names:
        vals = {k: [per_seed[s][name][k] for s in per_seed if name in per_seed[s]] for k in keys}
        if not vals["auroc"]:
            continue
        agg[name] = {k: (float(np.nanmean(v)), float(np.nanstd(v))) for k, v in vals.items()}
        rows.append(f"| {name} | " + " | ".join(f"{agg[name][k][0]:.3f} ± {agg[name][k][1]:.3f}" for k in keys) + " |")
    return "\n".join(rows), agg


def main(_):
    import logging
    logging.getLogger("jax").setLevel(logging.ERROR)
    os.makedirs(FLAGS.out, exist_ok=True)
    t0 = time.time()

    def log(msg):
        print(f"[{time.time() - t0:6.0f} s] {msg}", flush=True)

    if FLAGS.from_results:  # an earlier run's flags and per-seed scores: nothing is trained
        if not os.path.isfile(FLAGS.from_results):
            raise app.UsageError(f"--from_results={FLAGS.from_results}: no such file (a prm_quality OUT/results.json)")
        saved = json.load(open(FLAGS.from_results))
        for k in SAVED_FLAGS:
            FLAGS[k].value = saved["flags"][k]
    unknown = [m for m in FLAGS.methods if m not in METHODS]
    if unknown:
        raise app.UsageError(f"--methods: unknown {unknown}; expected some of {list(METHODS)}")
    variants = parse_variants(FLAGS.variant)  # bad specs fail before any training
    learned = {**{m: METHODS[m] for m in FLAGS.methods}, **variants}
    per_seed = ({int(s): v for s, v in saved["per_seed"].items()} if FLAGS.from_results
                else {int(s): run_seed(int(s), learned, log) for s in FLAGS.seeds})
    names = [n for n in ORDER if n in ("oracle", "policy_logp", "position", "floor") or n in FLAGS.methods] + list(variants)
    table, agg = summarise(per_seed, names)
    header = (f"Seeds {','.join(FLAGS.seeds)}; {FLAGS.iterations} iterations per learned model; oracle "
              f"({FLAGS.oracle_head} head, targets at {FLAGS.oracle_targets}) {FLAGS.oracle_steps} steps; "
              f"{FLAGS.test_prompts} test prompts; headline readout {FLAGS.readout}; mean ± std over seeds.\n\n")
    if FLAGS.from_results:
        header = f"{FLAGS.from_results}: " + header
    else:
        with open(os.path.join(FLAGS.out, "table.md"), "w") as f:
            f.write(header + table + "\n")
        with open(os.path.join(FLAGS.out, "results.json"), "w") as f:
            json.dump({"per_seed": per_seed, "summary": agg, "flags": {k: FLAGS[k].value for k in SAVED_FLAGS},
                       "time_s": time.time() - t0}, f, indent=2)
    print(header + table)
    get = lambda n: agg[n]["auroc"][0] if n in agg else float("nan")  # noqa: E731
    head = FLAGS.headline_repirl if FLAGS.headline_repirl in agg else "repirl"
    print(f"repirl_auroc below: {head} ({learned.get(head, {})}); the paper's scalar head (repirl): {get('repirl'):.3f}")
    print(f"oracle_auroc={get('oracle'):.3f} repirl_auroc={get(head):.3f} floor_auroc={get('floor'):.3f}")


if __name__ == "__main__":
    app.run(main)
