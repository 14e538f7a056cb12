"""Test configuration: x64 on (as the CLI sets it), strict dtype promotion, keys."""

import os

# Four host "devices" so the sharding tests run on CPU; must precede jax import. The tests
# compile far more than they compute (XLA compilation is ~60 % of the suite's time): without
# LLVM's optimisation passes compiles are ~20 % cheaper. The example scripts inherit both.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0")
# pyatomdb must never prompt: give it a private, pre-created cache directory.
os.environ.setdefault("JAXCLUSTER_TEST", "1")

import itertools

import jax
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


def pytest_collection_modifyitems(config, items):
    has_gpu = any(d.platform == "gpu" for d in jax.devices())
    skip_gpu = pytest.mark.skip(reason="needs a GPU")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)


@pytest.fixture
def getkey():
    """Return a function giving a fresh PRNG key on each call (deterministic per test)."""
    counter = itertools.count()
    base = jax.random.key(0)
    return lambda: jax.random.fold_in(base, next(counter))


@pytest.fixture(autouse=True, scope="module")
def _drop_compiled_code_before_the_kernel_limit():
    """Free the compiled executables when a worker nears the kernel's limit on memory mappings.

    Every XLA:CPU executable keeps its machine code in memory mappings; a
    pytest worker that runs half the suite crosses the kernel's
    `vm.max_map_count` (65 530 by default) and LLVM then crashes on the next
    compile (a segfault in `backend_compile_and_load`; measured: ~10 000
    mappings after two inference test modules, ~1 500 after
    `jax.clear_caches()`). Clearing only past half the limit keeps the
    compiled functions that later modules share.
    """
    yield
    try:
        with open("/proc/self/maps") as f:
            n_maps = sum(1 for _ in f)
        with open("/proc/sys/vm/max_map_count") as f:
            limit = int(f.read())
    except OSError:  # not Linux: no such limit to watch
        return
    if n_maps > limit // 2:
        import gc

        jax.clear_caches()
        gc.collect()
