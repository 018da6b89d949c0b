"""PRL (papers/prl_2601.10201.txt) with the paper's Qwen2.5-3B-Instruct batch settings (METHOD.md section 4).

No reward model: the advantage of a token is r_t = A_out - (1/eta) * sum_{j>=t} (logp_old - logp_ref)_j
taken at the end of its reasoning step (steps.delimiter, or every steps.every tokens) and filled back over
the step (losses.prl_advantages), eta = 200, A_out the group-normalised outcome. Uses the frozen reference
(the initial policy).

    python -m repirl_jax.launch --config=configs/prl.py --config.model.path=DIR --config.data.train=FILE
"""

from repirl_jax.config import paper_config


def get_config():
    return paper_config("qwen25_3b", algo="prl")
