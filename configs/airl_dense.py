"""Dense reasoning reward by adversarial IRL (papers/dense_reasoning_reward_airl_2510.01857.txt), with the
paper's Qwen2.5-3B-Instruct batch settings (METHOD.md sections 4 and 6).

A token-level discriminator (the PRM: trunk + scalar head) is trained by token-wise BCE, demonstrations
(label 1) against policy rollouts (label 0), label smoothing 0.1; its logit, clipped to
[airl.reward_min, airl.reward_max], is the reward; the policy advantage is the group-normalised token reward
summed over the suffix with gamma 0.9 (losses.airl_dense_advantages). advantage.outcome_weight = 0: the
learned reward alone, as in the paper (set it to 1 to add the outcome on the last token).
Options: airl.perturbed_negatives (one-step-corrupted demonstrations as extra negatives; synthetic task
only), airl.experts_in_group (demonstrations join each policy group).

    python -m repirl_jax.launch --config=configs/airl_dense.py --config.model.path=DIR --config.data.train=FILE
"""

from repirl_jax.config import paper_config


def get_config():
    return paper_config("qwen25_3b", algo="airl_dense")
