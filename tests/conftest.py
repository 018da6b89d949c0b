"""Test set-up: 8 simulated CPU devices (must happen before jax is imported anywhere)."""
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", False)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def hf_checkpoints(tmp_path_factory):
    """{variant: directory} of tiny random HF checkpoints saved by transformers."""
    from tests import hf_models
    root = tmp_path_factory.mktemp("hf")
    out = {}
    for name in hf_models.VARIANTS:
        hf_models.build(name, str(root / name))
        out[name] = str(root / name)
    return out
