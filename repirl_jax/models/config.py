"""Qwen2 / Qwen2.5 / Qwen3 / Llama model configuration: parsed from an HF `config.json`, or a named preset.

One frozen dataclass describes every architecture variant the decoder supports:
  Qwen2 / Qwen2.5: q/k/v biases, no q/k norm, head_dim = hidden / heads.
  Qwen3:           per-head RMSNorm on q and k, optional attention biases, head_dim from the config.
  Llama (2, 3.x, SmolLM2): no biases unless `attention_bias` (then on q, k, v and o), head_dim from the config
                   or hidden / heads, RoPE either plain or Llama-3.x scaled (`rope_type="llama3"`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from repirl_jax.errors import ConfigError

SUPPORTED_MODEL_TYPES = ("qwen2", "qwen3", "llama")
LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")  # the projections a LoRA adapter can modify
ROPE_TYPES = ("default", "llama3")
ARCHITECTURES = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "llama": "LlamaForCausalLM"}


@dataclasses.dataclass(frozen=True)
class QwenConfig:
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rope_theta: float = 1_000_000.0
    # RoPE frequency scaling: "default" (none) or "llama3" (Llama 3.1+: wavelengths longer than
    # original_max_position / low_freq_factor slowed down by `rope_factor`, a smooth blend up to
    # original_max_position / high_freq_factor; `rope_inv_freq`).
    rope_type: str = "default"
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_position: int = 8192
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    qkv_bias: bool = True  # Qwen2 always; Qwen3 when `attention_bias`
    o_bias: bool = False  # Qwen3 with `attention_bias` only
    qk_norm: bool = False  # Qwen3
    max_position_embeddings: int = 32768
    bos_token_id: int | None = None
    eos_token_id: tuple[int, ...] = ()
    # Numerics and memory (not part of the checkpoint format).
    dtype: str = "float32"  # compute dtype: float32 | bfloat16
    param_dtype: str = "float32"  # dtype of parameters created by init
    remat: str = "none"  # none | full | dots  (rematerialisation per decoder layer)
    # Causal attention without a cache runs in query blocks of this many positions; block i only scores keys
    # 0..end of block i (the rest are masked for all its queries), so ~half of the T x T work is skipped.
    # With remat, each block is also rematerialised, so a backward pass holds one block's scores at a time.
    # 0 = one block (full T x T scores). 64: on the CPU at 8 x 512 tokens (tools/bench_train.py --size=S
    # shapes) attention forward + backward takes 0.89x the time of 128-position blocks.
    attn_block: int = 64
    # Kernel of that attention (repirl_jax/models/attention.py): "auto" = cuDNN flash attention on a GPU for
    # bfloat16/float16, else the blocked XLA path; "blocked"; "cudnn" (GPU only).
    attn_impl: str = "auto"
    # LoRA (repirl_jax/lora.py): with lora_rank > 0 every projection named in lora_targets gains an adapter,
    # y = x W + (alpha / rank) (x A) B with A [in, rank], B [rank, out]; the parameters then hold both.
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = ()

    def __post_init__(self):
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(f"model_type={self.model_type!r}: expected one of {SUPPORTED_MODEL_TYPES}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}")
        if self.dtype not in ("float32", "bfloat16") or self.param_dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"dtype={self.dtype!r}, param_dtype={self.param_dtype!r}: expected float32 or bfloat16")
        if self.remat not in ("none", "full", "dots"):
            raise ConfigError(f"remat={self.remat!r}: expected none, full or dots")
        if self.attn_impl not in ("auto", "blocked", "cudnn"):
            raise ConfigError(f"attn_impl={self.attn_impl!r}: expected auto, blocked or cudnn")
        if self.rope_type not in ROPE_TYPES:
            raise ConfigError(f"rope_type={self.rope_type!r}: expected one of {ROPE_TYPES}")
        if self.rope_type == "llama3" and not self.rope_high_freq_factor > self.rope_low_freq_factor:
            raise ConfigError(f"rope high_freq_factor={self.rope_high_freq_factor} must exceed "
                              f"low_freq_factor={self.rope_low_freq_factor}")
        if self.lora_rank < 0 or (self.lora_rank and not self.lora_targets):
            raise ConfigError(f"lora_rank={self.lora_rank}, lora_targets={self.lora_targets}: a rank > 0 needs "
                              f"targets among {LORA_TARGETS}")
        bad = [t for t in self.lora_targets if t not in LORA_TARGETS]
        if bad:
            raise ConfigError(f"lora_targets {bad}: expected any of {LORA_TARGETS}")
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
        if self.attn_block < 0:
            raise ConfigError(f"attn_block={self.attn_block}: expected >= 0")

    @property
    def num_groups(self) -> int:
        return self.num_attention_heads // self.num_key_value_heads

    def replace(self, **kw) -> "QwenConfig":
        return dataclasses.replace(self, **kw)

    @property
    def lora_scale(self) -> float:
        return self.lora_alpha / self.lora_rank if self.lora_rank else 0.0

    def lora_target(self, name: str) -> bool:
        """Whether projection `name` (q, k, v, o, gate, up, down) carries a LoRA adapter."""
        return self.lora_rank > 0 and name in self.lora_targets

    def without_lora(self) -> "QwenConfig":
        """The base model's config (no adapter)."""
        return dataclasses.replace(self, lora_rank=0, lora_targets=())

    def num_params(self) -> int:
        e, i, v, l = self.hidden_size, self.intermediate_size, self.vocab_size, self.num_hidden_layers
        h, k, d = self.num_attention_heads, self.num_key_value_heads, self.head_dim
        attn = e * h * d + 2 * e * k * d + h * d * e
        attn += (h * d + 2 * k * d) * self.qkv_bias + e * self.o_bias + 2 * d * self.qk_norm
        layer = attn + 3 * e * i + 2 * e
        return v * e + l * layer + e + (0 if self.tie_word_embeddings else e * v)

    def num_lora_params(self) -> int:
        """Parameters of the LoRA adapter (r * (in + out) per targeted projection and layer)."""
        e, m, h, k, d = (self.hidden_size, self.intermediate_size, self.num_attention_heads,
                         self.num_key_value_heads, self.head_dim)
        sizes = {"q": (e, h * d), "k": (e, k * d), "v": (e, k * d), "o": (h * d, e), "gate": (e, m), "up": (e, m),
                 "down": (m, e)}
        per_layer = sum(sum(sizes[t]) for t in self.lora_targets) * self.lora_rank
        return per_layer * self.num_hidden_layers

    # --- HF config.json <-> QwenConfig -------------------------------------------------------------

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], source: str = "config.json", **overrides) -> "QwenConfig":
        def need(key):
            if key not in d:
                raise ConfigError(f"{source}: missing field {key!r}")
            return d[key]

        model_type = d.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(f"{source}: model_type={model_type!r} is not supported; expected one of "
                              f"{SUPPORTED_MODEL_TYPES}")
        if d.get("use_sliding_window"):
            raise ConfigError(f"{source}: use_sliding_window=true is not supported (set it to false)")
        if d.get("mlp_bias"):
            raise ConfigError(f"{source}: mlp_bias=true is not supported")
        if d.get("hidden_act", "silu") != "silu":
            raise ConfigError(f"{source}: hidden_act={d['hidden_act']!r} is not supported (only 'silu')")
        # transformers >= 5 writes rope_parameters (theta and scaling together); older files (and the
        # checkpoints' releases) have rope_theta and, where scaled, rope_scaling.
        rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default")) if rope else "default"
        if rope_type not in ROPE_TYPES:
            raise ConfigError(f"{source}: rope type {rope_type!r} is not supported (expected one of {ROPE_TYPES})")
        rope_theta = rope.get("rope_theta", d.get("rope_theta", 10000.0))
        scaling = {}
        if rope_type == "llama3":
            for field, key in (("rope_factor", "factor"), ("rope_low_freq_factor", "low_freq_factor"),
                               ("rope_high_freq_factor", "high_freq_factor"),
                               ("rope_original_max_position", "original_max_position_embeddings")):
                if key not in rope:
                    raise ConfigError(f"{source}: rope type 'llama3' needs the field {key!r}")
                scaling[field] = rope[key]
            scaling["rope_original_max_position"] = int(scaling["rope_original_max_position"])
        heads = need("num_attention_heads")
        hidden = need("hidden_size")
        eos = d.get("eos_token_id")
        eos = tuple(eos) if isinstance(eos, (list, tuple)) else ((eos,) if eos is not None else ())
        attention_bias = bool(d.get("attention_bias", False))
        kw = dict(
            model_type=model_type,
            vocab_size=need("vocab_size"),
            hidden_size=hidden,
            intermediate_size=need("intermediate_size"),
            num_hidden_layers=need("num_hidden_layers"),
            num_attention_heads=heads,
            num_key_value_heads=d.get("num_key_value_heads") or heads,
            head_dim=d.get("head_dim") or hidden // heads,
            rope_theta=float(rope_theta),
            rope_type=rope_type,
            **{k: float(v) if k != "rope_original_max_position" else v for k, v in scaling.items()},
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            qkv_bias=True if model_type == "qwen2" else attention_bias,
            o_bias=False if model_type == "qwen2" else attention_bias,  # Qwen3 and Llama: on o too
            qk_norm=model_type == "qwen3",
            max_position_embeddings=int(d.get("max_position_embeddings", 32768)),
            bos_token_id=d.get("bos_token_id"),
            eos_token_id=eos,
        )
        kw.update(overrides)
        return cls(**kw)

    @classmethod
    def from_hf_dir(cls, path: str, **overrides) -> "QwenConfig":
        file = os.path.join(path, "config.json")
        if not os.path.exists(file):
            raise ConfigError(f"{file}: not found (expected an HF model directory with config.json)")
        try:
            with open(file) as f:
                d = json.load(f)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{file}: not valid JSON ({e})") from e
        cfg = cls.from_hf_dict(d, source=file, **overrides)
        # The checkpoint's generation_config.json may list more end-of-turn ids than config.json (e.g. both
        # <|im_end|> and <|endoftext|>): the sampler stops at all of them, as transformers' generate does.
        gen = os.path.join(path, "generation_config.json")
        if "eos_token_id" not in overrides and os.path.exists(gen):
            try:
                with open(gen) as f:
                    eos = json.load(f).get("eos_token_id")
            except json.JSONDecodeError as e:
                raise ConfigError(f"{gen}: not valid JSON ({e})") from e
            eos = eos if isinstance(eos, list) else [] if eos is None else [eos]
            extra = tuple(int(i) for i in eos if int(i) not in cfg.eos_token_id)
            if extra:
                cfg = cfg.replace(eos_token_id=cfg.eos_token_id + extra)
        return cfg

    def to_hf_dict(self) -> dict[str, Any]:
        d = dict(
            architectures=[ARCHITECTURES[self.model_type]], model_type=self.model_type, vocab_size=self.vocab_size,
            hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers, num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads, head_dim=self.head_dim,
            rope_theta=self.rope_theta, rms_norm_eps=self.rms_norm_eps,
            tie_word_embeddings=self.tie_word_embeddings, hidden_act="silu",
            max_position_embeddings=self.max_position_embeddings, use_sliding_window=False,
            dtype=self.param_dtype,
        )
        if self.model_type in ("qwen3", "llama"):
            d["attention_bias"] = self.qkv_bias
        if self.model_type == "llama":
            d["mlp_bias"] = False
        if self.rope_type == "llama3":
            d["rope_scaling"] = dict(rope_type="llama3", factor=self.rope_factor,
                                     low_freq_factor=self.rope_low_freq_factor,
                                     high_freq_factor=self.rope_high_freq_factor,
                                     original_max_position_embeddings=self.rope_original_max_position)
        if self.bos_token_id is not None:
            d["bos_token_id"] = self.bos_token_id
        if self.eos_token_id:
            d["eos_token_id"] = self.eos_token_id[0] if len(self.eos_token_id) == 1 else list(self.eos_token_id)
        return d


# --- presets (architecture of the public checkpoints; weights always come from local paths) ----------

def _qwen25(hidden, inter, layers, heads, kv, tie):
    return QwenConfig(model_type="qwen2", vocab_size=151936, hidden_size=hidden, intermediate_size=inter,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
                      head_dim=hidden // heads, rope_theta=1_000_000.0, tie_word_embeddings=tie,
                      max_position_embeddings=32768, eos_token_id=(151645, 151643))


def _qwen3(hidden, inter, layers, heads, kv, tie):
    return QwenConfig(model_type="qwen3", vocab_size=151936, hidden_size=hidden, intermediate_size=inter,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
                      head_dim=128, rope_theta=1_000_000.0, tie_word_embeddings=tie, qkv_bias=False,
                      qk_norm=True, max_position_embeddings=40960, eos_token_id=(151645, 151643))


PRESETS: dict[str, QwenConfig] = {
    "qwen2.5-0.5b": _qwen25(896, 4864, 24, 14, 2, True),
    "qwen2.5-1.5b": _qwen25(1536, 8960, 28, 12, 2, True),
    "qwen2.5-3b": _qwen25(2048, 11008, 36, 16, 2, True),
    "qwen2.5-7b": _qwen25(3584, 18944, 28, 28, 4, False),
    "qwen3-0.6b": _qwen3(1024, 3072, 28, 16, 8, True),
    "qwen3-1.7b": _qwen3(2048, 6144, 28, 16, 8, True),
    "qwen3-4b": _qwen3(2560, 9728, 36, 32, 8, True),
    "qwen3-8b": _qwen3(4096, 12288, 36, 32, 8, False),
    # Tiny shapes for tests and the CPU demo (hidden divisible by 8 so every test mesh shards it).
    "tiny-qwen2": QwenConfig(model_type="qwen2", vocab_size=256, hidden_size=64, intermediate_size=128,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                             rope_theta=10000.0, tie_word_embeddings=False),
    "tiny-qwen3": QwenConfig(model_type="qwen3", vocab_size=256, hidden_size=64, intermediate_size=128,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                             rope_theta=10000.0, tie_word_embeddings=True, qkv_bias=False, qk_norm=True),
}


def preset(name: str, **overrides) -> QwenConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides)
