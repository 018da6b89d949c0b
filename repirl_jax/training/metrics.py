"""Metrics: one JSON line per iteration in WORKDIR/metrics.jsonl, TensorBoard scalars, and a progress bar.

Only process 0 writes. On resume the JSONL is cut back to the restored iteration, so an interrupted and
resumed run ends with the same file as one that never stopped.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

import jax


def _clean(v: Any):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class MetricsWriter:
    def __init__(self, workdir: str, resume_from: int | None = None, tensorboard: bool = True):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if not self.enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        self._truncate(resume_from)
        self._file = open(self.path, "a")
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
                self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
            except ImportError:  # optional
                self._tb = None

    def _truncate(self, keep_upto: int | None):
        """Keep only lines with iteration <= keep_upto (all lines dropped when keep_upto is None)."""
        if not os.path.exists(self.path):
            return
        kept = []
        if keep_upto is not None:
            with open(self.path) as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a torn last line from a crash
                    if row.get("iteration", 0) <= keep_upto:
                        kept.append(json.dumps(row) + "\n")
        with open(self.path + ".tmp", "w") as f:
            f.writelines(kept)
        os.replace(self.path + ".tmp", self.path)

    def write(self, iteration: int, metrics: dict[str, Any]):
        if not self.enabled:
            return
        row = {"iteration": iteration, **{k: _clean(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "iteration":
                    self._tb.add_scalar(k, v, iteration)
            self._tb.flush()

    def close(self):
        if not self.enabled:
            return
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def progress(total: int, initial: int = 0, desc: str = "train"):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="it", file=sys.stderr, dynamic_ncols=True,
                disable=jax.process_index() != 0)
