"""The algorithm registry, the jitted advantage table and the one rollout stop rule."""

import jax
import numpy as np
import pytest
import transformers

from repirl_jax import algorithms, launch
from repirl_jax.algorithms import advantages, losses
from repirl_jax.generation import rollout, sampling
from repirl_jax.training import build, train
from repirl_jax.training.metrics import read_metrics
from tests.test_tokenizer import QWEN_TOKENIZER
from tests.train_config import tiny_config

IM_END, ENDOFTEXT = 151645, 151643


class BatchMeanBaseline(algorithms.Algorithm):
    """A method defined here, outside the library: REINFORCE-style advantages o_i - mean(o) over the whole
    batch (no groups), on every response token, with the library's PPO-clipped policy loss."""
    name = "test_batch_mean"

    def policy_batch(self, engine, batch):
        m = batch.rollouts.response_mask
        adv = (batch.outcome - batch.outcome.mean())[:, None] * m
        self.seen = getattr(self, "seen", 0) + 1
        extra = {"logp_old": batch.logp_old.astype(np.float32), "adv": adv.astype(np.float32)}
        return batch.rollouts, extra, engine.num_rollouts


def test_an_algorithm_registered_from_a_test_file_trains_two_iterations(tmp_path):
    algo = algorithms.register(BatchMeanBaseline())
    try:
        c = tiny_config("test_batch_mean")
        trainer = launch.run(c, str(tmp_path), progress_bar=False).trainer
        rows = read_metrics(str(tmp_path))
        assert [r["iteration"] for r in rows] == [1, 2] and algo.seen == 2
        for r in rows:
            assert all(np.isfinite(v) for v in r.values() if isinstance(v, float)), r
            assert r["logp_diff_sampler_vs_trainer"] < 1e-4 and r["policy_grad_norm"] > 0
        assert rows[0]["adv_abs_max"] <= 1.0  # |o_i - mean(o)| with 0/1 outcomes
        assert "prm" not in trainer.state and trainer.ref is None
    finally:
        algorithms.base.REGISTRY.pop("test_batch_mean")
    with pytest.raises(train.ConfigError, match="algo='test_batch_mean'"):
        train.validate(tiny_config("test_batch_mean"), num_devices=1)


def test_every_registered_method_has_a_config_that_validates():
    assert len(algorithms.names()) >= 10
    for name in algorithms.names():
        train.validate(tiny_config(name), num_devices=1)
        assert algorithms.get(name).name == name


def _advantage_inputs(b=6, t=7):
    rng = np.random.RandomState(0)
    m = (np.arange(t)[None, :] < rng.randint(1, t + 1, size=(b, 1))).astype(np.float32)
    x = advantages.AdvantageInputs(
        outcome=rng.randint(0, 2, size=b).astype(np.float32), process=rng.normal(size=(b, t)).astype(np.float32) * m,
        mask=m, group=np.repeat(np.arange(b // 2), 2).astype(np.int32), values=rng.normal(size=(b, t)).astype(np.float32),
        logp_old=-np.abs(rng.normal(size=(b, t))).astype(np.float32),
        ref_logp=-np.abs(rng.normal(size=(b, t))).astype(np.float32),
        step_ends=np.asarray(losses.step_end_mask(rng.randint(0, 3, size=(b, t)), m, 1)))
    return x, advantages.AdvantageParams(c=0.3, outcome_weight=0.7, gamma=0.9, lam=0.8, eta=5.0)


def test_the_jitted_advantage_table_equals_the_loss_functions():
    x, hp = _advantage_inputs()
    m = x.mask
    eager = {
        "rloo": losses.rloo_advantages(x.outcome, x.process, m, x.group, hp.c, hp.outcome_weight, hp.process_mode),
        "grpo": losses.grpo_advantages(x.outcome, x.process, m, x.group, hp.c, hp.outcome_weight),
        "ppo": losses.masked_whiten(losses.gae_advantages(
            losses.token_rewards(x.outcome, x.process, m, hp.c, hp.outcome_weight), x.values, m, hp.gamma,
            hp.lam)[0], m),
        "prl": losses.prl_advantages(x.outcome, x.logp_old, x.ref_logp, m, x.step_ends, x.group, hp.eta,
                                     hp.outcome_weight),
        "airl_dense": losses.airl_dense_advantages(x.outcome, x.process, m, x.group, hp.c, hp.outcome_weight,
                                                   hp.reward_min, hp.reward_max, hp.airl_gamma, hp.std_eps),
    }
    assert set(eager) == set(advantages.ESTIMATORS)
    for name, ref in eager.items():
        adv, ret = advantages.compute(name, x, hp)
        np.testing.assert_allclose(np.asarray(adv), np.asarray(ref), rtol=1e-5, atol=1e-6, err_msg=name)
        assert (ret is not None) == advantages.ESTIMATORS[name].uses_values


def test_advantages_reach_the_update_without_a_host_copy():
    """The estimator's output is taken into mini-batches and placed for the update on the device (a copy to
    the host would raise under the transfer guard); only masked_stats' three numbers come back, equal to
    numpy's."""
    from jax.sharding import NamedSharding, PartitionSpec

    from repirl_jax.algorithms.batches import stack_micro
    from repirl_jax.runtime import distributed
    x, hp = _advantage_inputs(b=8)
    adv, _ = advantages.compute("rloo", x, hp)
    sharding = NamedSharding(jax.make_mesh((2,), ("data",), devices=jax.devices()[:2]), PartitionSpec(None, "data"))
    idx = np.arange(2, 6)
    with jax.transfer_guard_device_to_host("disallow"):
        placed = distributed.global_rows(stack_micro(adv[idx], 2), sharding)
        stats = advantages.masked_stats(adv, x.mask)
    assert isinstance(placed, jax.Array) and placed.sharding == sharding
    np.testing.assert_array_equal(np.asarray(placed), np.asarray(adv)[idx].reshape(2, 2, -1))
    a = np.asarray(adv)[x.mask > 0]
    np.testing.assert_allclose(np.asarray(stats), [a.mean(), a.std(), np.abs(a).max()], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(advantages.masked_stats(adv, np.zeros_like(x.mask))), [0, 0, 0])


def test_token_rewards_are_joined_on_the_device_and_read_there_by_the_estimator():
    """The PRM's token rewards of a batch computed in several chunks are joined on the device, split by rows
    over the mesh, equal to the chunks copied to the host; the estimator takes them as they are (a copy to
    the host between the PRM and the advantages would raise under the transfer guard)."""
    from repirl_jax.algorithms.batches import Traj
    from repirl_jax.data import synthetic
    from repirl_jax.rewards.scorers import build_reward_fn
    from repirl_jax.runtime.sharding import make_mesh
    c = tiny_config("repirl", **{"train.inference_batch_multiple": 1})
    tok, mesh = synthetic.CharTokenizer(), make_mesh(2, 1, 1, devices=jax.devices()[:2])
    models = build.build_models(c, build.model_config(c, tok), mesh)
    trainer = train.Trainer(c, mesh, models, tok, build_reward_fn(c)[0], build.build_datasets(c, tok)[0])
    records = trainer.train_set[:4]
    ro = trainer.rollouts(records, jax.random.key(0))
    traj = Traj(*trainer.prompt_arrays(records, 2), ro["tokens"], ro["mask"])
    rows = traj.prompt.shape[0]
    assert rows == 8 and trainer.chunk_rows(rows) == 2  # four chunks
    x, hp = _advantage_inputs(b=rows, t=traj.response.shape[1])
    host = trainer.rewards_in_chunks(traj, None)
    with jax.transfer_guard_device_to_host("disallow"):
        r = trainer.engine.token_rewards(traj)
        adv, _ = advantages.compute("rloo", x._replace(process=r, mask=traj.response_mask), hp)
    assert isinstance(r, jax.Array) and r.sharding == trainer.rows_sharding(r.shape)
    assert len(r.sharding.device_set) == 2 and np.abs(host).max() > 0
    np.testing.assert_array_equal(np.asarray(r), host)
    ref, _ = advantages.compute("rloo", x._replace(process=host, mask=traj.response_mask), hp)
    np.testing.assert_allclose(np.asarray(adv), np.asarray(ref), rtol=1e-6, atol=1e-7)


@pytest.fixture(scope="module")
def base_tokenizer():
    """The Qwen vocabulary as a base model ships it (Qwen3-4B-Base): eos <|endoftext|>, chat template kept."""
    tok = transformers.AutoTokenizer.from_pretrained(QWEN_TOKENIZER, eos_token="<|endoftext|>")
    assert tok.eos_token_id == ENDOFTEXT and tok.convert_tokens_to_ids("<|im_end|>") == IM_END
    return tok


def test_stop_rule_and_demonstration_end_token_with_a_base_tokenizer(base_tokenizer):
    cfg = build.model_config(tiny_config(**{"model.vocab_size": 151936})).replace(eos_token_id=())
    assert rollout.stop_token_ids(cfg, base_tokenizer, chat=True) == (ENDOFTEXT, IM_END)
    assert rollout.stop_token_ids(cfg, base_tokenizer, chat=False) == (ENDOFTEXT,)
    assert rollout.stop_token_ids(cfg.replace(eos_token_id=(7,)), base_tokenizer, chat=False) == (7, ENDOFTEXT)
    assert rollout.end_token_id(base_tokenizer, chat=True) == IM_END
    assert rollout.end_token_id(base_tokenizer, chat=False) == ENDOFTEXT


def _end_of_turn_policy(cfg):
    """Tiny Qwen3 whose every next token is <|im_end|>: zero attention / MLP outputs leave the residual at
    the embedding e0 (one-hot), and the tied LM head scores <|im_end|> (embedding 10 e0) highest."""
    from repirl_jax.models import qwen
    params = jax.tree.map(np.asarray, qwen.init_params(cfg, jax.random.key(0)))
    embed = np.zeros_like(params["embed"])
    embed[:, 0] = 1.0
    embed[IM_END, 0] = 10.0
    params["embed"] = embed
    for name in [k for k in params if k.startswith("layer_")]:
        params[name]["attn"]["o_kernel"] = np.zeros_like(params[name]["attn"]["o_kernel"])
        params[name]["mlp"]["down_kernel"] = np.zeros_like(params[name]["mlp"]["down_kernel"])
    return params


@pytest.mark.parametrize("prompt_format", ["chat_math", "chat_synthetic", "raw"])
def test_training_rollouts_stop_at_the_end_of_turn_with_chat_prompts(base_tokenizer, prompt_format):
    """Qwen3-4B-Base's case: eos <|endoftext|>, chat prompts. A training rollout (and evaluation) stops at
    <|im_end|>, and the demonstrations end with it; with raw prompts <|im_end|> is an ordinary token."""
    from repirl_jax.runtime.sharding import make_mesh
    c = tiny_config("rloo", **{"model.vocab_size": 151936, "data.prompt_format": prompt_format,
                               "rollout.max_prompt_len": 16, "rollout.max_response_len": 6,
                               "data.experts_per_prompt": 1})
    cfg = build.model_config(c, base_tokenizer).replace(eos_token_id=())
    models = train.Models(cfg, {"model": _end_of_turn_policy(cfg)}, None, None)
    records = [{"prompt": f"What is {i}+1?", "experts": [f"{i}+1={i + 1}"], "ground_truth": str(i + 1)}
               for i in range(4)]
    trainer = train.Trainer(c, make_mesh(1, 1, 1, devices=jax.devices()[:1]), models, base_tokenizer,
                            lambda recs, texts: ([0.0] * len(texts), {}), records)
    ro = trainer.rollouts(trainer.train_set, jax.random.key(0))
    chat = prompt_format != "raw"
    assert (ro["tokens"][:, 0] == IM_END).all()
    if chat:
        assert (ro["lengths"] == 1).all() and (ro["finish"] == sampling.FINISH_STOP).all()
        assert ro["texts"] == [""] * len(ro["texts"])
    else:
        assert (ro["lengths"] == 6).all() and (ro["finish"] == sampling.FINISH_LENGTH).all()
    assert all(r["expert_ids"][0][-1] == (IM_END if chat else ENDOFTEXT) for r in trainer.train_set)
    assert trainer.sampling_config(1, greedy=True).stop_token_ids == trainer.stop_ids


def test_chat_synthetic_is_the_synthetic_task_through_the_chat_template(base_tokenizer):
    """data.prompt_format=chat_synthetic: every split's prompt is one user turn of the checkpoint's chat template
    (the task prompt, then the task's instruction at the config's modulus), ending with the assistant's turn;
    ids, ground truths and demonstrations are the raw task's."""
    from repirl_jax.data import synthetic
    task = {"data.synthetic.modulus": 10, "data.synthetic.max_addend": 9}
    c = tiny_config(**{"data.prompt_format": "chat_synthetic", **task})
    chat = build.build_datasets(c, base_tokenizer)
    raw = build.build_datasets(tiny_config(**task), base_tokenizer)
    for raw_split, chat_split in zip(raw, chat):
        assert [r["id"] for r in raw_split] == [r["id"] for r in chat_split] and raw_split
        for r, ch in zip(raw_split, chat_split):
            assert (r["ground_truth"], r["experts"]) == (ch["ground_truth"], ch["experts"])
            instruction = synthetic.instruction(10, c.data.synthetic.ops)
            assert ch["prompt"] == (f"<|im_start|>user\n{r['prompt']}\n{instruction}<|im_end|>\n"
                                    f"<|im_start|>assistant\n")


def test_prompt_format_is_one_the_project_knows():
    from repirl_jax.data import synthetic
    from repirl_jax.data.prompts import format_prompt
    with pytest.raises(algorithms.ConfigError, match="data.prompt_format='chat_maths'"):
        algorithms.validate(tiny_config(**{"data.prompt_format": "chat_maths"}), 1)
    with pytest.raises(ValueError, match="chat template"):  # the synthetic task's own tokenizer has none
        format_prompt("01+02=?\n", "chat_synthetic", synthetic.CharTokenizer())
    assert format_prompt("01+02=?\n", "raw") == "01+02=?\n"


def test_registry_knows_what_each_method_needs():
    get = algorithms.get
    assert [n for n in algorithms.names() if get(n).needs_prm] == ["repirl", "prime", "airl_dense", "math_shepherd"]
    c = tiny_config("repirl")
    assert [n for n in algorithms.names() if get(n).needs_ref(c)] == ["prime", "kto", "prl"]
    assert {n: get(n).step_reduce for n in algorithms.names() if get(n).step_reduce != "mean"} == {
        "math_shepherd": "last"}


def test_entry_points_import_the_library_never_each_other_and_name_no_algorithm():
    """launch.py and evaluate.py do not import each other (nor does library code import an entry point);
    train.py and launch.py compare no algorithm name (the registry's names appear in neither as strings)."""
    import ast
    import os

    from repirl_jax import algorithms
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "repirl_jax")

    def imported(path):
        names = set()
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        return names

    entry_points = {"repirl_jax.launch", "repirl_jax.evaluate", "repirl_jax.make_experts"}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                module = "repirl_jax." + os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                bad = {m for m in imported(path) if m in entry_points and m != module}
                assert not bad, f"{path} imports the entry point(s) {sorted(bad)}"

    for f in ("training/train.py", "training/build.py", "training/loop.py", "launch.py"):
        strings = {node.value for node in ast.walk(ast.parse(open(os.path.join(root, f)).read()))
                   if isinstance(node, ast.Constant) and isinstance(node.value, str)}
        named = strings & set(algorithms.names())
        assert not named, f"{f} names algorithm(s) {sorted(named)}"
    assert len(open(os.path.join(root, "training", "train.py")).read().splitlines()) <= 450
