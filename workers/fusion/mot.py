"""Learned latent fusion after Mixture of Thoughts: the primary cross-attends to its peers.

The experts stay frozen. At ``points`` evenly spaced decoder layers of the primary (3 by default)
an :class:`InteractionLayer` projects the primary's hidden states and each peer's hidden states
(taken at the same relative depth) into a shared space, lets every primary token attend over the
peer tokens, projects back and adds the result through a ``tanh(alpha)`` gate with ``alpha = 0``
at init: an untrained fuser IS the primary, bit for bit.

The experts tokenize differently, so positions are never interpolated (that leaks future peer
tokens). Instead every token carries the CHARACTER offset where its text ends, in the shared
content coordinates (question, then answer; each model's template maps onto them), and a primary
token sees a peer token only if that token's text ends at or before its own
(:func:`visible`). A learned null slot is always visible, so no row is empty.

``prompt_only=True`` is the Cache-to-Cache style variant: peers are read on the prompt only and
decoding runs the primary alone.

Example::

    >>> fuser = LatentFuser.create(primary=qwen, peers=[smol, gemma])     # doctest: +SKIP
    >>> fuser.trainable_parameters()                                        # doctest: +SKIP
    2965507
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from workers.fusion.lm import LocalLM
from orchestrator.errors import ConfigError, ModelNotFoundError

CONFIG_FILE = "fuser.json"
WEIGHTS_FILE = "interaction.safetensors"


def interaction_points(num_layers: int, points: int) -> list[int]:
    """``points`` decoder-layer indices spread evenly over ``num_layers`` (never the last layer)."""
    return [max(0, round(num_layers * (i + 1) / (points + 1)) - 1) for i in range(points)]


def peer_hidden_index(num_layers: int, points: int, i: int) -> int:
    """Index into ``output_hidden_states`` of a peer at the same relative depth as point ``i``."""
    return interaction_points(num_layers, points)[i] + 1


def visible(primary_ends: torch.Tensor, peer_ends: torch.Tensor) -> torch.Tensor:
    """``[..., T, S]`` True where peer token s ends at or before primary token t (char offsets)."""
    return peer_ends.unsqueeze(-2) <= primary_ends.unsqueeze(-1)


class InteractionLayer(nn.Module):
    """Primary queries, peer keys/values in a shared space; gated residual back into the primary."""

    def __init__(self, d_primary: int, d_peers: Sequence[int], shared: int = 256, heads: int = 4) -> None:
        super().__init__()
        self.q_norm, self.q_proj = nn.LayerNorm(d_primary), nn.Linear(d_primary, shared)
        self.peer_norms = nn.ModuleList(nn.LayerNorm(d) for d in d_peers)
        self.peer_projs = nn.ModuleList(nn.Linear(d, shared) for d in d_peers)
        self.null_kv = nn.Parameter(torch.zeros(1, 1, shared))
        self.attn = nn.MultiheadAttention(shared, heads, batch_first=True)
        self.out = nn.Linear(shared, d_primary)
        self.alpha = nn.Parameter(torch.zeros(1))
        self.heads = heads

    def forward(self, h: torch.Tensor, peers: Sequence[torch.Tensor], allowed: torch.Tensor) -> torch.Tensor:
        """``h`` [B,T,dp]; ``peers[j]`` [B,S_j,d_j]; ``allowed`` [B,T,sum S_j] bool."""
        b, t, _ = h.shape
        q = self.q_proj(self.q_norm(h))
        kv = torch.cat([self.null_kv.expand(b, 1, -1)] +
                       [proj(norm(p.to(h.dtype))) for p, norm, proj in zip(peers, self.peer_norms, self.peer_projs)], dim=1)
        allow = torch.cat([torch.ones(b, t, 1, dtype=torch.bool, device=h.device), allowed], dim=-1)
        mask = (~allow).repeat_interleave(self.heads, dim=0)
        o, _ = self.attn(q, kv, kv, attn_mask=mask, need_weights=False)
        return h + torch.tanh(self.alpha) * self.out(o)


class LatentFuser(nn.Module):
    """Frozen primary + frozen peers + trainable interaction layers (the only parameters saved)."""

    def __init__(self, primary: LocalLM, peers: Sequence[LocalLM], points: int = 3, shared: int = 256,
                 heads: int = 4, prompt_only: bool = False) -> None:
        super().__init__()
        if not peers:
            raise ConfigError("latent fusion needs at least one peer expert besides the primary")
        self.primary, self.peers = primary, list(peers)
        self.points, self.shared, self.heads, self.prompt_only = points, shared, heads, prompt_only
        self.layer_ids = interaction_points(primary.num_layers, points)
        self.peer_hidden = [[peer_hidden_index(p.num_layers, points, i) for i in range(points)] for p in self.peers]
        self.interactions = nn.ModuleList(
            InteractionLayer(primary.hidden_size, [p.hidden_size for p in self.peers], shared, heads) for _ in range(points))
        self.to(primary.device)
        self._ctx: tuple[list[list[torch.Tensor]], torch.Tensor] | None = None
        self._hooks = [self._layers()[lid].register_forward_hook(self._hook(i)) for i, lid in enumerate(self.layer_ids)]

    @classmethod
    def create(cls, primary: LocalLM, peers: Sequence[LocalLM], **kw: Any) -> "LatentFuser":
        return cls(primary, peers, **kw)

    def config(self) -> dict[str, Any]:
        return {"primary": self.primary.name, "peers": [p.name for p in self.peers], "points": self.points,
                "shared": self.shared, "heads": self.heads, "prompt_only": self.prompt_only,
                "layer_ids": self.layer_ids}

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.interactions.parameters())

    def _layers(self) -> nn.ModuleList:
        return self.primary.model.get_decoder().layers

    def _hook(self, i: int):
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            if self._ctx is None:
                return output
            peer_states, allowed = self._ctx
            h = output[0] if isinstance(output, tuple) else output
            fused = self.interactions[i](h, [states[i] for states in peer_states], allowed)
            return (fused, *output[1:]) if isinstance(output, tuple) else fused
        return hook

    def close(self) -> None:
        """Detach the hooks from the (shared, cached) primary model."""
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def primary_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                       peer_states: list[list[torch.Tensor]], allowed: torch.Tensor, **kw: Any) -> Any:
        """Run the primary with the interaction active; ``peer_states[j][i]`` is peer j at point i."""
        self._ctx = (peer_states, allowed)
        try:
            return self.primary.model(input_ids=input_ids, attention_mask=attention_mask, **kw)
        finally:
            self._ctx = None

    # ---- persistence -----------------------------------------------------------------------
    def save(self, out_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.interactions.state_dict().items()}, out / WEIGHTS_FILE)
        (out / CONFIG_FILE).write_text(json.dumps({**self.config(), **(extra or {})}, indent=2))
        return out

    @classmethod
    def load(cls, out_dir: str | Path, lms: dict[str, LocalLM]) -> "LatentFuser":
        """A saved fuser over already loaded models (``lms`` by model name)."""
        from safetensors.torch import load_file

        d = Path(out_dir)
        if not (d / CONFIG_FILE).exists() or not (d / WEIGHTS_FILE).exists():
            raise ModelNotFoundError(f"no trained fuser in {d}", hint="train one with `expertmix fuse train --out DIR`")
        cfg = json.loads((d / CONFIG_FILE).read_text())
        missing = [n for n in [cfg["primary"], *cfg["peers"]] if n not in lms]
        if missing:
            raise ConfigError(f"fuser in {d} needs models {missing} that are not loaded")
        fuser = cls(lms[cfg["primary"]], [lms[n] for n in cfg["peers"]], points=cfg["points"], shared=cfg["shared"],
                    heads=cfg["heads"], prompt_only=cfg.get("prompt_only", False))
        fuser.interactions.load_state_dict(load_file(d / WEIGHTS_FILE, device=str(fuser.primary.device)))
        return fuser


def read_config(out_dir: str | Path) -> dict[str, Any]:
    d = Path(out_dir)
    if not (d / CONFIG_FILE).exists():
        raise ModelNotFoundError(f"no trained fuser in {d}", hint="train one with `expertmix fuse train --out DIR`")
    return json.loads((d / CONFIG_FILE).read_text())
