"""The error-localisation pictures say what they show: the PRM's head and step-error AUROC in the title, the
policy's own log-probs of the same traces beside them (with their AUROC), no blank band under the title."""

import os

import numpy as np
import pytest

from repirl_jax.data import synthetic
from repirl_jax.evaluation import prm_eval, reports


def _rows(values_of):
    """Localisation rows of 6 clean + 6 corrupted expert traces, with per-character values from values_of."""
    split = synthetic.make_splits(seed=0, n_train=4, n_val=2, n_test=6, noise=0.0, num_steps=(8, 8), modulus=10,
                                  ops="+-*", max_addend=9, max_factor=9)
    rng = np.random.default_rng(0)
    prompts, texts = [], []
    for r in split["test"]:
        prompts += [r["prompt"], r["prompt"]]
        texts += [r["experts"][0], synthetic.corrupt(r["experts"][0], rng, modulus=10)]
    return prm_eval.localisation_rows(prompts, texts, [values_of(t, rng) for t in texts], 10)


def _blank_rows(path):
    """The longest run of all-white pixel rows in the top third of a PNG, and the image height."""
    import matplotlib.image
    img = matplotlib.image.imread(path)[..., :3]
    white = (img > 0.98).all(axis=(1, 2))
    longest = run = 0
    for w in white[: len(white) // 3]:
        run = run + 1 if w else 0
        longest = max(longest, run)
    return longest, len(white)


def test_titles_name_the_head_and_both_aurocs():
    title, names = reports.localisation_titles("repirl", "scalar", "mean", 0.585, 0.934)
    assert title.startswith("repirl PRM, scalar head (the paper's): step-error AUROC 0.585")
    assert "log-probs on the same traces: 0.934" in title
    assert len(names) == 2 and "scalar head (the paper's)" in names[0] and "AUROC 0.585" in names[0]
    assert "what prm.head=likelihood starts from" in names[1] and "AUROC 0.934" in names[1]
    title, names = reports.localisation_titles("repirl", "likelihood", "mean", 0.95, None)
    assert names == [] and "likelihood head" in title and "AUROC 0.950" in title  # one panel is enough


def test_render_png_two_panels(tmp_path):
    rewards = _rows(lambda t, rng: rng.normal(size=len(t)))
    logps = _rows(lambda t, rng: -np.abs(rng.normal(size=len(t))))
    assert [(r["prompt"], r["response"], r["correct"]) for r in rewards] == \
        [(r["prompt"], r["response"], r["correct"]) for r in logps]
    title, names = reports.localisation_titles("repirl", "scalar", "mean", 0.585, 0.934)
    two, one = str(tmp_path / "two.png"), str(tmp_path / "one.png")
    prm_eval.render_png(rewards, two, title=title, panels=list(zip(names, (rewards, logps))))
    prm_eval.render_png(rewards, one, title="PRM token rewards")
    import matplotlib.image
    h2, w2 = matplotlib.image.imread(two).shape[:2]
    h1, w1 = matplotlib.image.imread(one).shape[:2]
    assert os.path.getsize(two) > 10_000 and w2 > 1.5 * w1  # a second panel of the same traces
    for path in (one, two):
        blank, height = _blank_rows(path)
        assert blank < 40, (path, blank, height)  # no band under the title (was ~12% of the figure's height)


def test_render_png_wraps_long_lines(tmp_path):
    """Real model outputs (long lines, no step labels) draw inside the picture: lines wrap at max_chars, so a
    longer line makes the picture taller, not wider."""
    import matplotlib.image
    sizes = []
    for n in (200, 400):
        rows = [{"prompt": "What is 2+3?", "response": "x" * n + "\nSo the answer is 5.", "rewards": [0.1] * (n + 20),
                 "first_error_span": None, "correct": c} for c in (True, False)]
        prm_eval.render_png(rows, str(tmp_path / f"long{n}.png"), max_chars=50)
        sizes.append(matplotlib.image.imread(str(tmp_path / f"long{n}.png")).shape[:2])
    (h200, w200), (h400, w400) = sizes
    assert w200 == w400 and h400 > h200


@pytest.fixture(scope="module")
def repirl_run(tmp_path_factory):
    from repirl_jax import launch
    from tests.train_config import tiny_config
    workdir = str(tmp_path_factory.mktemp("pics") / "run")
    return launch.run(tiny_config("repirl", **{"train.max_iterations": 1}), workdir, progress_bar=False).summary


def test_demo_report_shows_the_policy_log_probs_beside_the_scalar_prm(repirl_run):
    s = repirl_run
    assert 0.0 <= s["prm_auroc_all_steps"] <= 1.0 and 0.0 <= s["policy_logp_auroc_all_steps"] <= 1.0
    html = open(s["localisation_html"]).read()
    assert f"scalar head (the paper&#x27;s): step-error AUROC {s['prm_auroc_all_steps']:.3f}" in html
    assert f"log-probs on the same traces: {s['policy_logp_auroc_all_steps']:.3f}" in html
    assert os.path.getsize(s["localisation_png"]) > 1000
    from repirl_jax.launch import _summary_table
    assert "policy log-prob step-error AUROC" in _summary_table(s, "w")
