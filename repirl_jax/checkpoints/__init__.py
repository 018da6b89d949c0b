"""What is on disk: HF safetensors <-> params, our converted directories, orbax training state, run dirs."""
