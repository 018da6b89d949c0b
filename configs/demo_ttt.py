"""Test-time training on the demo task (METHOD.md section 5): starting from a finished demo run, train the
policy on the TEST prompts with process rewards only (outcome weight 0, so no answer is used by the update)
from the run's frozen PRM, then measure greedy test accuracy.

    python -m repirl_jax.launch --config=configs/demo_ttt.py --config.model.path=runs/demo \
        --config.prm.path=runs/demo --workdir=runs/demo_ttt

(The rollout accuracy in the metrics is computed with the answers for logging only.)
"""

import os

from repirl_jax import algorithms
from repirl_jax.config import load_config_file

# What makes a run test-time training (also tools/reproduce.py's `ttt` method); advantage.c = 1: the process
# reward is the only signal.
SETTINGS = {"data.train": "synthetic:test", "warmup_bc.steps": 0, "prm.frozen": True,
            "advantage.outcome_weight": 0.0, "advantage.c": 1.0}


def get_config():
    c = load_config_file(os.path.join(os.path.dirname(__file__), "demo.py"))
    algorithms.apply_settings(c, SETTINGS)
    c.train.update(max_iterations=30, eval_every=10, checkpoint_every=30)
    return c
