"""Token ids in, samples out: the jitted sampler, continuous batching, rollouts, text completions."""
