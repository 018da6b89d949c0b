"""Tiny random Qwen2 / Qwen3 / Llama checkpoints built with transformers (the reference implementation)."""

import torch
import transformers

VARIANTS = {
    # name: (config class, model class, config kwargs)
    "qwen2_untied_bias": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM,
                          dict(num_key_value_heads=2, tie_word_embeddings=False, rope_theta=10000.0)),
    "qwen2_tied": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM,
                   dict(num_key_value_heads=4, tie_word_embeddings=True, rope_theta=1_000_000.0)),
    # head_dim 32 != hidden / heads = 16, and a single KV head.
    "qwen3_qknorm": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM,
                     dict(num_key_value_heads=1, head_dim=32, tie_word_embeddings=False)),
    # SmolLM2-style: tied head, no biases, 3 query heads per KV head... here 2 (4 / 2).
    "llama_tied": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
                   dict(num_key_value_heads=2, tie_word_embeddings=True, rope_theta=100000.0, rms_norm_eps=1e-5)),
    # Llama-3.1-style: untied, RoPE scaling (rope_type llama3; an original context of 64 positions puts the
    # tiny head's frequencies on both sides of the band and inside it), attention biases on q, k, v and o.
    "llama31_rope_scaling": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
                             dict(num_key_value_heads=1, tie_word_embeddings=False, attention_bias=True,
                                  rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0,
                                                       low_freq_factor=1.0, high_freq_factor=4.0,
                                                       original_max_position_embeddings=64))),
}


def build(variant: str, path: str, seed: int = 0, dtype=torch.float32, **overrides):
    """Save a random model of `variant` to `path` with `save_pretrained`; returns the torch model."""
    config_cls, model_cls, kw = VARIANTS[variant]
    torch.manual_seed(seed)
    base = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=512)
    config = config_cls(**{**base, **kw, **overrides})
    model = model_cls(config)
    with torch.no_grad():  # non-trivial norms and biases, so that their conversion is exercised
        for name, p in model.named_parameters():
            if "norm" in name or "bias" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model = model.to(dtype).eval()
    model.save_pretrained(path)
    return model
