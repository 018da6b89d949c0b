"""Math-Shepherd (MCTS-style step labels) with the paper's Qwen2.5-3B-Instruct batch settings (METHOD.md
section 4).

Each iteration, every reasoning step of the policy's rollouts is completed shepherd.k times from its prefix by
the current policy; its label is the fraction of correct completions (shepherd.label = soft) or whether any
is correct (hard); the PRM (trunk + scalar head) is trained by per-step BCE on the step-end token's logit.
Its step scores sigmoid(z) at the step ends are the process reward of RLOO (advantage.c = 0.1). A
solution's score is its minimum step score (evaluate --selection=min_step). The completions cost about
k x (steps per rollout) rollouts per iteration: see README, "Math-Shepherd's extra rollout cost".

    python -m repirl_jax.launch --config=configs/math_shepherd.py --config.model.path=DIR --config.data.train=FILE
"""

from repirl_jax.config import paper_config


def get_config():
    return paper_config("qwen25_3b", algo="math_shepherd")
