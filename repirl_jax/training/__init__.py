"""The engine: training state and shardings, the jitted update step, the loop, metrics."""
