"""A synthetic multi-step arithmetic task with verifiable answers and known step-level correctness.

Task
----
A problem is a chain: a start value and N operations, applied LEFT TO RIGHT (no precedence), every result
taken modulo `modulus` (default 100, so every value is in 0..99 and "05-08=97", "47*08=76" are correct).
Every number is written with exactly number_width(modulus) = len(str(modulus - 1)) digits, zero-padded
(2 at the default), so lines have a fixed layout -- a tiny model then learns to copy operands from the
prompt quickly and its mistakes are arithmetic ones:

    prompt    "47*08-15+12=?\\n"                            (the text the policy sees; the response follows)
    response  "47*08=76\\n76-15=61\\n61+12=73\\n#73"        (one step per line, then the answer line)
    answer    "73"                                         (the ground truth, in the same fixed width)

Step i (0-based) of the expert is the line f"{v[i]}{op[i]}{b[i]}={v[i+1]}" (each number zero-padded) where
v[0] is the start value and v[i+1] = (v[i] op[i] b[i]) mod modulus; the answer line is f"#{v[N]}". There are
no spaces and no trailing newline (the end-of-sequence token follows the answer line).

Difficulty: `num_steps` N (an int, or a (lo, hi) range drawn uniformly per problem, inclusive; the drawn N
is metadata["difficulty"]) and operand sizes: "+" and "-" take operands in 1..max_addend (default 19), "*"
takes 2..max_factor (default 9), the start value is in 0..modulus-1. Sizes at the default (modulus 100):
prompt = 3N + 5 tokens, response = 9N + 3 tokens (+1 eos), i.e. 17 and 39 (+1) at N = 4.
Calibration (single runs on 2 shared CPU cores, not tests): a 0.74M-parameter Qwen2 (hidden 128, 3 layers,
vocab 32), behaviour-cloned on one demonstration each of 2000 default problems for 1200 steps of batch 32
(~5.5 minutes), greedy-answers 57% of 300 test problems; its per-step accuracy (given its own carried
value) is ~97% on "+" and "-" but ~57% on "*", so errors are mostly multiplications. With max_addend=99
(1000 problems, same budget) it answered ~10%; with max_addend=9, max_factor=5 its training loss fell to
~1e-3 (near perfect). Fewer BC steps or more steps N lower the accuracy.

Expert
------
`expert_response(chain)` writes the correct solution. `demonstration(chain, rng, noise, kind)`: with
probability `noise` (independently per demonstration) the demonstration is imperfect. kind "corrected"
(`corrected_response`, the demo's default since issue 11): at a step j the line states a wrong result and
the NEXT line redoes step j correctly (same left side), so the answer is right but one line is wrong and
the response is one line longer. kind "carried" (`noisy_response`): exactly ONE arithmetic slip:
at a step j drawn uniformly from 0..N-1 the stated result is a wrong value (a near miss +-1, +-2, +-10 or a
uniformly random other value), and every later line continues CONSISTENTLY from the wrong value (later
steps are arithmetically right given their left side, the answer line repeats the last stated value). The
wrong value is chosen so that the chain never re-merges with the true one (multiplication mod 100 can map
two values to one), so the final answer of a noisy demonstration is always wrong and `label_steps` reports
first_error == j. With noise 0 every demonstration is the exact expert solution.

Step correctness (`label_steps`) -- the "true chain" definition
--------------------------------------------------------------
The response is split on "\\n" into items (the characters between newlines; a single trailing newline does
not start a new item; "" has no items). Every item is a step, the answer line included. The expert's items
are its N step lines followed by its answer line (N + 1 items).

    item i is CORRECT  iff  p(i) < N + 1 and the item text equals the expert's item p(i) exactly,

where p(i) is the item's position: p(0) = 0, and p advances by one after every item except a RETRACTED
attempt -- a step line followed by a step line with the same left side (a<op>b) but a different result,
i.e. a correction; the redo is then judged against the same expert item. Without retractions p(i) = i.

So a step is correct iff it applies the chain's i-th operation with the right operand to the TRUE value
v[i] and states the TRUE result v[i+1] in canonical form (fixed width, no spaces), and the answer line is
correct iff it is item N and states v[N]. Consequences:
a step whose left side carries a wrong value is wrong, so after a slip that the trace carries on
consistently every later step is wrong (they are judged against the true chain, not the trace's own
values); a malformed line (garbage, blank line in the middle, spaces, "#" line too early) is wrong; extra
steps beyond N are wrong (item N must be the answer line), as is anything after the answer line; a
truncated trace has fewer items -- the missing ones are not labelled (`complete` is False), so a
correct-so-far prefix has first_error None. `first_error` is the index of the first wrong item or None.
Each item also gets `locally_valid` (consistency with the trace itself, see `Step`), which is the notion
under which a noisy demonstration has exactly one bad step. The chain is parsed from the prompt; pass
`modulus=` (metadata["modulus"]) when the task does not use the default 100. `token_step_labels` maps the
items onto response tokens (each item's terminating newline belongs to it) and `per_step` reduces
per-token values (e.g. PRM rewards) to one value per item for a step-error AUROC.

Scoring: `score(response, ground_truth)` is 1.0 iff the last non-empty line of the response, stripped, is
exactly "#" + ground_truth; else 0.0 (never raises).

Tokenizer: `CharTokenizer`, one id per character (so character spans ARE token spans), 29 ids including
the specials <pad>=0, <eos>=1, <bos>=2, <unk>=3. It duck-types the parts of a HuggingFace tokenizer the
project uses.

Splits: `make_splits(seed, n_train, n_val, n_test, **task)` (or `SyntheticTask(...).split(name)`) returns
records {"id", "prompt", "ground_truth", "experts", "domain", "metadata"} (the shape of
`data.prompts.load_prompt_set`). Test is drawn first, then validation, then train, each from its own
seeded stream and deduplicated by prompt against everything drawn before, so the test set does not change
when n_train or n_val change, and no two records (within or across splits) share a prompt. `noise` applies
to the splits in `noise_splits` (default: train only), so evaluation demonstrations stay clean.
"""

from repirl_jax.data.synthetic.labels import (
                                              Step,
                                              StepLabels,
                                              TokenStepLabels,
                                              corrupt,
                                              is_step_line,
                                              label_steps,
                                              per_step,
                                              split_items,
                                              token_step_labels,
)
from repirl_jax.data.synthetic.splits import SyntheticTask, make_splits
from repirl_jax.data.synthetic.task import (
                                              DEFAULT_MAX_ADDEND,
                                              DEFAULT_MAX_FACTOR,
                                              DEFAULT_NUM_EXPERTS,
                                              DEFAULT_NUM_STEPS,
                                              DOMAIN,
                                              MODULUS,
                                              NOISE_KINDS,
                                              OPS,
                                              SPLITS,
                                              Chain,
                                              apply_op,
                                              corrected_response,
                                              demonstration,
                                              expert_response,
                                              extract_answer,
                                              instruction,
                                              noisy_response,
                                              number_width,
                                              parse_prompt,
                                              sample_chain,
                                              score,
)
from repirl_jax.data.synthetic.tokenizer import CHARS, SPECIAL_TOKENS, CharTokenizer, get_tokenizer

__all__ = [
    "CHARS", "DEFAULT_MAX_ADDEND", "DEFAULT_MAX_FACTOR", "DEFAULT_NUM_EXPERTS", "DEFAULT_NUM_STEPS", "DOMAIN",
    "MODULUS", "NOISE_KINDS", "OPS", "SPECIAL_TOKENS", "SPLITS", "Chain", "CharTokenizer", "Step", "StepLabels",
    "SyntheticTask", "TokenStepLabels", "apply_op", "corrected_response", "corrupt", "demonstration",
    "expert_response", "extract_answer", "get_tokenizer", "instruction", "is_step_line", "label_steps",
    "make_splits", "noisy_response", "number_width", "parse_prompt", "per_step", "sample_chain", "score",
    "split_items", "token_step_labels",
]
