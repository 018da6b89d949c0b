"""Test set-up: 8 simulated CPU devices (must happen before jax is imported anywhere)."""
import atexit
import os
import shutil

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", False)
# Many tests compile the same programs (e.g. the training steps of each algorithm): share them through
# JAX's persistent compilation cache for the duration of the test session.
_CACHE = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"repirl_jax_test_cache_{os.getpid()}")
jax.config.update("jax_compilation_cache_dir", _CACHE)
atexit.register(shutil.rmtree, _CACHE, True)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

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


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` run only where JAX's default backend is a GPU (tools/device_check.sh)."""
    if jax.default_backend() == "gpu":
        return
    skip = pytest.mark.skip(reason="needs a GPU (jax.default_backend() != 'gpu')")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
