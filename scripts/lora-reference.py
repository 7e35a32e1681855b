#!/usr/bin/env python3
"""PEFT LoRA adapters for a base checkpoint, and the merged checkpoints PEFT's merge defines,
computed independently of kiln with numpy (the test tooling for tests/lora.rs).

For each adapter below, writes OUT/<name>/ (adapter_config.json + adapter_model.safetensors,
the layout PEFT's save_pretrained writes: `base_model.model.<module>.lora_A.weight` [r, in],
`lora_B.weight` [out, r]) and OUT/merged-<name>/ (the base directory's files with
model.safetensors holding W + (B @ A) * scaling in float32 — `LoraLayer.get_delta_weight` and
`merge_and_unload` for nn.Linear, scaling = lora_alpha / r, or lora_alpha / sqrt(r) with
use_rslora).

A is drawn as PEFT initializes it (kaiming-uniform, a = sqrt(5): U(-1/sqrt(in), 1/sqrt(in)));
B, zero at initialization, as a trained adapter's: N(0, 0.01²). Seeded: the same bytes on
every run.

Usage: lora-reference.py BASE_DIR OUT_DIR   (needs numpy and safetensors)
"""
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]

# name: (r, lora_alpha, use_rslora, target_modules, seed)
ADAPTERS = {
    "r8": (8, 16, False, ATTN + MLP, 1),
    "r64-rslora": (64, 16, True, ATTN + MLP, 2),
    "r16-attn": (16, 32, False, ATTN, 3),
}


def main():
    base, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    weights = load_file(str(base / "model.safetensors"))
    for name, (r, alpha, rslora, targets, seed) in ADAPTERS.items():
        rng = np.random.default_rng(seed)
        tensors = {}
        merged = dict(weights)
        scaling = alpha / math.sqrt(r) if rslora else alpha / r
        for key in sorted(weights):
            if not key.endswith(".weight"):
                continue
            module = key[: -len(".weight")]
            if module.rsplit(".", 1)[-1] not in targets:
                continue
            w = weights[key]
            assert w.dtype == np.float32 and w.ndim == 2, key
            n_out, n_in = w.shape
            bound = 1.0 / math.sqrt(n_in)
            a = rng.uniform(-bound, bound, size=(r, n_in)).astype(np.float32)
            b = (rng.standard_normal(size=(n_out, r)) * 0.01).astype(np.float32)
            tensors[f"base_model.model.{module}.lora_A.weight"] = a
            tensors[f"base_model.model.{module}.lora_B.weight"] = b
            delta = (b @ a) * np.float32(scaling)
            merged[key] = (w + delta.astype(np.float32)).astype(np.float32)
        d = out / name
        d.mkdir(exist_ok=True)
        cfg = {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base.name,
            "r": r,
            "lora_alpha": alpha,
            "use_rslora": rslora,
            "target_modules": targets,
            "lora_dropout": 0.05,
            "bias": "none",
            "fan_in_fan_out": False,
            "modules_to_save": None,
            "init_lora_weights": True,
            "use_dora": False,
            "inference_mode": True,
            "rank_pattern": {},
            "alpha_pattern": {},
        }
        (d / "adapter_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        save_file(tensors, str(d / "adapter_model.safetensors"), metadata={"format": "pt"})
        m = out / f"merged-{name}"
        m.mkdir(exist_ok=True)
        for f in base.iterdir():
            if f.is_file() and f.name != "model.safetensors":
                shutil.copyfile(f, m / f.name)
        save_file(merged, str(m / "model.safetensors"), metadata={"format": "pt"})
        print(f"{name}: {len(tensors) // 2} modules, scaling {scaling:g} -> {d}, {m}")


if __name__ == "__main__":
    main()
