"""What the benchmark scripts share: the model shapes they time and best-of-N wall-clock timing."""

import time

SHAPES = {
    "XS": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
               intermediate_size=768),
    "S": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=2,
              intermediate_size=2048),
}


def best_time(fn, repeats: int) -> float:
    """Seconds of the fastest of `repeats` calls of `fn`, after one untimed warm-up call (compilation)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
