"""The synthetic arithmetic task: step labeller, expert, tokenizer, splits, score, corrupt."""
import numpy as np
import pytest

from repirl_jax.data import synthetic as S

# 7*3=21, 21-5=16, 16+8=24 (mod 100, every number written with 2 digits)
PROMPT = "07*03-05+08=?\n"
GOOD = "07*03=21\n21-05=16\n16+08=24\n#24"


def _kinds(lab):
    return [s.kind for s in lab.steps]


# --- step labeller on hand-worked traces ---------------------------------------------------------------

def test_chain_and_expert():
    c = S.parse_prompt(PROMPT)
    assert c.values == [7, 21, 16, 24] and c.answer == "24" and c.prompt == PROMPT
    assert c.expert_response() == GOOD
    assert S.parse_prompt("05-08*09=?").values == [5, 97, 73]  # mod 100, left to right
    with pytest.raises(ValueError, match="not a synthetic"):
        S.parse_prompt("hello")
    with pytest.raises(ValueError, match="exactly 2 digits"):
        S.parse_prompt("5-08*09=?")
    c10 = S.parse_prompt("7*3-5=?", modulus=10)
    assert c10.values == [7, 1, 6] and c10.expert_response() == "7*3=1\n1-5=6\n#6"


def test_label_all_correct():
    lab = S.label_steps(PROMPT, GOOD)
    assert lab.correct == [True] * 4 and lab.first_error is None and lab.complete and lab.all_correct
    assert _kinds(lab) == ["step", "step", "step", "answer"]
    assert lab.spans == [(0, 8), (9, 17), (18, 26), (27, 30)]
    assert [GOOD[s:e] for s, e in lab.spans] == GOOD.split("\n")
    assert all(s.locally_valid for s in lab.steps) and lab.answer == "24"


def test_label_error_at_step_1_with_consistent_continuation():
    resp = "07*03=21\n21-05=15\n15+08=23\n#23"  # slip in item 1, then consistent
    lab = S.label_steps(PROMPT, resp)
    assert lab.first_error == 1
    assert lab.correct == [True, False, False, False]  # judged against the true chain
    assert [s.locally_valid for s in lab.steps] == [True, False, True, True]
    assert lab.steps[1].expected == "21-05=16" and lab.complete and not lab.all_correct
    assert S.score(resp, "24") == 0.0


def test_label_wrong_carried_value_and_recovery():
    # item 1 uses a wrong left side but states the true result: wrong; item 2 equals the expert's: correct
    resp = "07*03=21\n22-05=16\n16+08=24\n#24"
    lab = S.label_steps(PROMPT, resp)
    assert lab.correct == [True, False, True, True] and lab.first_error == 1
    assert [s.locally_valid for s in lab.steps] == [True, False, True, True]


def test_label_malformed_line():
    resp = "07*03=21\n21-05=1x6\n16+08=24\n#24"
    with pytest.raises(ValueError):  # 'x' is not even a token; the labeller still handles it
        S.get_tokenizer().encode(resp)
    lab = S.label_steps(PROMPT, resp)
    assert _kinds(lab) == ["step", "malformed", "step", "answer"]
    assert lab.correct == [True, False, True, True] and lab.first_error == 1
    assert not lab.steps[1].locally_valid and not lab.steps[2].locally_valid  # no carried value after garbage
    for bad in ("07*03=21\n\n21-05=16\n16+08=24\n#24", "07*03 = 21\n21-05=16\n16+08=24\n#24",
                "7*3=21\n21-05=16\n16+08=24\n#24", "07*03=021\n21-05=16\n16+08=24\n#24", "#24"):
        lab = S.label_steps(PROMPT, bad)
        assert lab.first_error in (0, 1) and not lab.all_correct


def test_label_truncated_without_answer():
    lab = S.label_steps(PROMPT, "07*03=21\n21-05=16\n16+")
    assert lab.correct == [True, True, False] and lab.first_error == 2
    assert not lab.complete and lab.answer is None and S.score("07*03=21\n21-05=16\n16+", "24") == 0.0
    lab = S.label_steps(PROMPT, "07*03=21\n21-05=16\n")  # correct so far, cut at a line end
    assert lab.correct == [True, True] and lab.first_error is None and not lab.complete and not lab.all_correct
    assert lab.spans == [(0, 8), (9, 17)]


def test_label_extra_steps():
    resp = "07*03=21\n21-05=16\n16+08=24\n24+01=25\n#25"
    lab = S.label_steps(PROMPT, resp)
    assert lab.correct == [True, True, True, False, False] and lab.first_error == 3
    assert lab.steps[4].expected is None and _kinds(lab)[-1] == "answer"
    # anything after the answer line is an extra (wrong) item, and the score reads the last line
    lab = S.label_steps(PROMPT, GOOD + "\n#24")
    assert lab.first_error == 4 and S.score(GOOD + "\n#24", "24") == 1.0
    assert S.score(GOOD + "\n05+01=06", "24") == 0.0
    # the answer too early
    lab = S.label_steps(PROMPT, "07*03=21\n#21")
    assert lab.correct == [True, False] and lab.first_error == 1 and not lab.steps[1].locally_valid


def test_label_empty_response():
    lab = S.label_steps(PROMPT, "")
    assert lab.steps == [] and lab.first_error is None and not lab.complete and not lab.all_correct
    tl = S.token_step_labels(PROMPT, "", S.get_tokenizer())
    assert tl.step_index.shape == (0,)
    lab = S.label_steps(PROMPT, "\n")
    assert _kinds(lab) == ["malformed"] and lab.first_error == 0


def test_token_step_labels():
    tok = S.get_tokenizer()
    resp = "07*03=21\n21-05=15\n15+08=23\n#23"
    tl = S.token_step_labels(PROMPT, resp, tok)
    assert len(tl.step_index) == len(tok.encode(resp)) == len(resp)
    expect = [0] * 9 + [1] * 9 + [2] * 9 + [3] * 3  # each newline belongs to the item it ends
    assert tl.step_index.tolist() == expect
    assert tl.after_error.tolist() == [0] * 9 + [1] * 21
    assert tl.step_correct.tolist() == [1] * 9 + [0] * 21
    tl = S.token_step_labels(PROMPT, resp, tok, with_eos=True)
    assert tl.step_index[-1] == -1 and tl.after_error[-1] == 1 and len(tl.step_index) == len(resp) + 1
    vals, corr = S.per_step(np.arange(len(resp) + 1, dtype=float), tl, "min")
    assert vals.tolist() == [0, 9, 18, 27] and corr.tolist() == [True, False, False, False]
    assert S.per_step(np.ones(len(resp)), tl, "mean")[0].tolist() == [1.0] * 4
    # prefix: the mean over every response token up to the item's last one (eos ignored)
    v = np.random.default_rng(0).normal(size=len(resp) + 1)
    ends = [8, 17, 26, len(resp) - 1]
    np.testing.assert_allclose(S.per_step(v, tl, "prefix")[0], [v[:e + 1].mean() for e in ends])
    with pytest.raises(ValueError, match="prefix"):
        S.per_step(v, tl, "median")

    class Bpe:  # two characters per token: not character-level
        def encode(self, text, add_special_tokens=False):
            return list(range((len(text) + 1) // 2))
    with pytest.raises(ValueError, match="character-level"):
        S.token_step_labels(PROMPT, resp, Bpe())


# --- expert -----------------------------------------------------------------------------------------------

def test_expert_always_correct_without_noise():
    recs = S.make_splits(123, 300, 0, 0, num_steps=(1, 7))["train"]
    assert len({r["metadata"]["difficulty"] for r in recs}) == 7
    for r in recs:
        assert len(r["experts"]) == 4
        for e in r["experts"]:
            lab = S.label_steps(r["prompt"], e)
            assert lab.all_correct and lab.first_error is None, (r["prompt"], e)
            assert all(s.locally_valid for s in lab.steps)
            assert S.score(e, r["ground_truth"]) == 1.0
        assert r["metadata"]["expert_error_steps"] == [None] * 4


def test_expert_noise_half():
    task = S.SyntheticTask(seed=7, n_train=300, n_val=20, n_test=20, num_steps=(2, 6), noise=0.5)
    recs = task.split("train")
    n_wrong = total = 0
    for r in recs:
        for e, err in zip(r["experts"], r["metadata"]["expert_error_steps"]):
            total += 1
            lab = S.label_steps(r["prompt"], e)
            assert lab.complete and len(lab.steps) == r["metadata"]["num_steps"] + 1
            if err is None:
                assert lab.all_correct and S.score(e, r["ground_truth"]) == 1.0
                continue
            n_wrong += 1
            assert lab.first_error == err and S.score(e, r["ground_truth"]) == 0.0
            assert all(not c for c in lab.correct[err:])  # consistent continuation never re-merges
            assert [s.locally_valid for s in lab.steps].count(False) == 1  # exactly one slip
            assert not lab.steps[err].locally_valid
    assert 0.44 < n_wrong / total < 0.56
    # noise applies to train only by default; the problems do not depend on noise
    assert all(e == r["metadata"]["reference"] for r in task.split("test") for e in r["experts"])
    clean = S.SyntheticTask(seed=7, n_train=300, n_val=20, n_test=20, num_steps=(2, 6))
    assert [r["prompt"] for r in clean.split("train")] == [r["prompt"] for r in recs]


def test_noisy_response_requested_step():
    # 7+18=25, 25*4=0, 0*5=0: a slip at step 0 to any multiple of 5 (incl. the +-10 near misses) re-merges
    c = S.parse_prompt("07+18*04*05=?")
    for seed in range(20):
        for j in range(3):
            resp, k = S.noisy_response(c, np.random.default_rng(seed), step=j)
            lab = S.label_steps(c, resp)
            assert k == j and lab.first_error == j and S.score(resp, c.answer) == 0.0
            assert not any(lab.correct[j:])


# --- tokenizer --------------------------------------------------------------------------------------------

def test_tokenizer():
    tok = S.CharTokenizer()
    assert len(tok) == tok.vocab_size == 29 < 64
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.chat_template is None
    text = "47*08-35+62=?\n47*08=76\n#03"
    ids = tok.encode(text, add_special_tokens=False)
    assert len(ids) == len(text) and all(4 <= i < len(tok) for i in ids)
    assert tok(text, add_special_tokens=False)["input_ids"] == ids
    assert tok([text, "1"])["input_ids"] == [ids, tok.encode("1")]
    assert tok.decode(ids, skip_special_tokens=True) == text
    with_special = [tok.bos_token_id] + ids + [tok.eos_token_id, tok.pad_token_id, 31]  # 31: beyond the vocab
    assert tok.decode(with_special, skip_special_tokens=True) == text
    assert tok.decode(with_special) == "<bos>" + text + "<eos><pad><unk>"
    assert tok.encode("<eos>1<pad>") == [1, tok.convert_tokens_to_ids("1"), 0]
    assert tok.decode(np.asarray(ids, np.int32), skip_special_tokens=True) == text
    assert tok.convert_tokens_to_ids("<eos>") == 1
    assert tok.convert_tokens_to_ids("<|im_end|>") == tok.unk_token_id
    assert tok.convert_tokens_to_ids(["#", "zz"]) == [tok.convert_tokens_to_ids("#"), 3]
    for bad, ch in (("12a", "a"), ("1\t2", "\t"), ("<unk", "<")):
        with pytest.raises(ValueError, match="not in the vocabulary") as ei:
            tok.encode(bad)
        assert f"character {ch!r}" in str(ei.value)
    for r in S.make_splits(0, 50, 0, 0, num_steps=(1, 8))["train"]:  # every task string is encodable
        assert tok.decode(tok.encode(r["prompt"] + r["experts"][0])) == r["prompt"] + r["experts"][0]


# --- splits -----------------------------------------------------------------------------------------------

def test_splits_deterministic_and_disjoint():
    a = S.make_splits(3, 400, 100, 150)
    b = S.make_splits(3, 400, 100, 150)
    assert a == b
    assert {k: len(v) for k, v in a.items()} == {"train": 400, "val": 100, "test": 150}
    prompts = [r["prompt"] for v in a.values() for r in v]
    assert len(set(prompts)) == len(prompts)
    ids = [r["id"] for v in a.values() for r in v]
    assert len(set(ids)) == len(ids)
    c = S.make_splits(4, 400, 100, 150)
    assert [r["prompt"] for r in c["test"]] != [r["prompt"] for r in a["test"]]
    # test and val do not depend on the train size
    d = S.make_splits(3, 50, 100, 150)
    assert d["test"] == a["test"] and d["val"] == a["val"] and d["train"] == a["train"][:50]
    r = a["train"][0]
    assert set(r) >= {"id", "prompt", "ground_truth", "experts", "metadata"}
    assert r["prompt"].endswith("=?\n") and r["metadata"]["difficulty"] == 4
    assert S.parse_prompt(r["prompt"]).answer == r["ground_truth"]
    assert S.SyntheticTask(seed=3, n_train=400, n_val=100, n_test=150).split("val") == a["val"]
    with pytest.raises(ValueError, match="distinct problems"):  # 100 * 2 one-step problems exist here
        S.make_splits(0, 300, 0, 0, num_steps=1, ops="*", max_factor=3)


# --- score and corrupt ------------------------------------------------------------------------------------

def test_score_robust():
    assert S.score(GOOD, "24") == 1.0
    assert S.score(GOOD + "\n\n", " 24 ") == 1.0
    assert S.score("#24", "24") == 1.0 and S.score("x\n#05", "05") == 1.0
    for resp in ("", "\n", "#", "#2 4", "#024", "24", "#25", "# 24x", "#99999999999999999999", "<eos>"):
        assert S.score(resp, "24") == 0.0
    assert S.score("#5", "05") == 0.0  # canonical (fixed-width) form only
    assert S.score(None, "24") == 0.0 and S.score(123, "24") == 0.0 and S.score(GOOD, None) == 0.0
    assert S.score(GOOD, 24) == 1.0


def test_corrupt():
    rng = np.random.default_rng(0)
    for seed in range(30):
        out = S.corrupt(GOOD, rng)
        a, b = GOOD.split("\n"), out.split("\n")
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        assert len(b) == len(a) and len(diff) == 1 and diff[0] < 3
        lab = S.label_steps(PROMPT, out)
        assert lab.first_error == diff[0] and lab.correct.count(False) == 1
        assert b[diff[0]].rsplit("=", 1)[0] == a[diff[0]].rsplit("=", 1)[0]  # only the result changed
    out = S.corrupt(GOOD, rng, step=0, propagate=True)
    lab = S.label_steps(PROMPT, out)
    assert lab.first_error == 0 and lab.correct == [False] * 4
    assert [s.locally_valid for s in lab.steps] == [False, True, True, True]
    assert S.corrupt("garbage\n" + GOOD + "\n", rng, step=2).endswith("\n")
    with pytest.raises(ValueError, match="no step line"):
        S.corrupt("#24", rng)


# --- corrections (a slip redone on the next line) ---------------------------------------------------------

def test_label_corrected_slip():
    resp = "07*03=21\n21-05=15\n21-05=16\n16+08=24\n#24"  # item 1 slips, item 2 redoes step 1
    lab = S.label_steps(PROMPT, resp)
    assert lab.correct == [True, False, True, True, True] and lab.first_error == 1
    assert [s.expected for s in lab.steps] == GOOD.split("\n")[:2] + GOOD.split("\n")[1:]
    assert [s.locally_valid for s in lab.steps] == [True, False, True, True, True]
    assert lab.complete and not lab.all_correct and S.score(resp, "24") == 1.0
    # the same line twice (same result) is no correction: the second copy is judged as the next step
    lab = S.label_steps(PROMPT, "07*03=21\n07*03=21\n21-05=16\n16+08=24\n#24")
    assert lab.correct == [True, False, False, False, False]
    # a redo that is itself wrong, then a right one: both attempts are wrong, the rest right
    lab = S.label_steps(PROMPT, "07*03=21\n21-05=15\n21-05=17\n21-05=16\n16+08=24\n#24")
    assert lab.correct == [True, False, False, True, True, True]
    # an expert line that repeats itself (5*3 = 5 mod 10) stays correct
    c = S.parse_prompt("5*3*3=?", modulus=10)
    assert S.label_steps(c, c.expert_response(), 10).all_correct


def test_corrected_noise():
    task = S.SyntheticTask(seed=5, n_train=200, n_val=10, n_test=10, num_steps=(3, 8), noise=0.4,
                           noise_kind="corrected")
    n_noisy = total = 0
    for r in task.split("train"):
        for e, err in zip(r["experts"], r["metadata"]["expert_error_steps"]):
            total += 1
            lab = S.label_steps(r["prompt"], e)
            assert S.score(e, r["ground_truth"]) == 1.0 and lab.complete
            if err is None:
                assert lab.all_correct
                continue
            n_noisy += 1
            assert lab.first_error == err and lab.correct.count(False) == 1
            assert len(lab.steps) == r["metadata"]["num_steps"] + 2
    assert 0.33 < n_noisy / total < 0.47
    with pytest.raises(ValueError, match="noise_kind"):
        S.SyntheticTask(noise_kind="typo")
    with pytest.raises(ValueError, match="step="):
        S.corrected_response(S.parse_prompt(PROMPT), 0, step=3)


@pytest.mark.parametrize("modulus, ops", [(100, "+-*"), (100, "+-"), (10, "+-*"), (100, "*")])
def test_the_chat_instruction_s_examples_are_right_at_its_modulus(modulus, ops):
    """synthetic.instruction (data.prompt_format=chat_synthetic): its worked example is a correct expert
    solution and its wrap-around example a correct step, labelled so by label_steps at the same modulus."""
    text = S.instruction(modulus, ops)
    head, example = text.split(" write:\n")
    prompt = head.rsplit("for ", 1)[1] + "\n"
    chain = S.parse_prompt(prompt, modulus)
    assert [op for op, _ in chain.ops] == list((ops * 2)[:2])
    labels = S.label_steps(prompt, example, modulus)
    assert labels.all_correct and len(labels) == 3
    assert S.score(example, chain.answer) == 1.0
    wrap = text.split("(so ", 1)[1].split(")", 1)[0]  # e.g. 05-08=97
    left = wrap.split("=")[0]
    assert S.label_steps(left + "=?\n", wrap + "\n#" + wrap.split("=")[1], modulus).all_correct
    assert f"modulo {modulus} " in text
