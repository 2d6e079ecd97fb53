"""Experts fused inside one process with PyTorch + transformers (vLLM exposes neither lockstep
per-step distributions nor hidden states): token-level fusion across tokenizers
(:mod:`workers.fusion.token_fusion`) and learned latent fusion (:mod:`workers.fusion.mot`).
See docs/latent.md.
"""
