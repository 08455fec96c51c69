"""The four (or five) PPO roles on one frozen base, as named LoRA adapters of a single peft model.

==========  =========================================  =========  =====================================
role        weights                                    trained    forward
==========  =========================================  =========  =====================================
policy      base + adapter ``policy`` (+ the LM head)  yes        logits → log-probs of response tokens
reference   base + adapter ``reference`` (the SFT      no         same; or the bare base with every
            adapter the policy started from)                      adapter disabled when there was no SFT
value       base + adapter ``value`` + scalar head     yes        head on every response position
reward      base + adapter ``reward`` + scalar head    no         head at the last token (engine.trainers.ppo.rewards)
safety      base + adapter ``safety`` + label head     no         max label probability = the cost
==========  =========================================  =========  =====================================

How roles switch: :class:`engine.reward_model.HeadedModel` keeps the adapters on one ``PeftModel``; running a role
is ``activate(name)`` (peft's ``set_adapter``, then the trainable adapters get their gradients back) followed by a
forward of the shared backbone; the reference without an adapter runs under ``disable_adapter()``. The base's
weights exist once in memory whatever the number of roles, which is what lets PPO fit where four full copies do
not (bench/bench_ppo_memory.py).

Shared frozen layers: when the policy, value and reference adapters all leave the bottom ``k`` transformer layers
alone (``lora_top_layers``), those layers compute the same hidden state for every one of the three roles and for
every PPO epoch. :meth:`PpoRoles.bottom` runs them once, with no gradient, and the forwards take that hidden state
and run only the layers above it (SmolLM2 on a CPU, 10 adapted layers of 30: the update about a quarter faster, a
PPO step about a fifth; sampling and the reward model, which cannot share, are the rest). The ``packed_…``
forwards do the same on a rollout packed by ``engine.trainers.ppo.packing`` (each prompt once for its responses, no padding),
which is how the experience maker scores a rollout; the update reads the padded layout. transformers has no
"start at layer k" entry point, so the top runs the backbone's own forward on ``inputs_embeds`` = the cached state
with its ``layers`` list cut to the top ones (masks, rotary positions and the final norm stay the model's own);
because that relies on the backbone doing nothing else to ``inputs_embeds``, the constructor checks on a probe that
the split forward gives the full forward's hidden state and shares nothing when it does not.

Dropout: every role runs in eval mode, so the policy that computes the PPO ratio is exactly the one that sampled
(the ratio is 1 on the first mini-batch) and the reference is deterministic.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor

from ...logits import head_transform, output_logits
from ...pair_attention import pairs_attention
from ...token_logprobs import token_logprobs
from ...reward_model import HeadedModel
from .packing import PackedGroups

POLICY, REFERENCE, VALUE, REWARD, SAFETY = "policy", "reference", "value", "reward", "safety"


def _token_logprobs(logits: Tensor, targets: Tensor, with_entropy: bool) -> tuple[Tensor, Tensor | None]:
    """(log-probabilities [B, R] of ``targets`` under ``logits`` [B, R, V], entropy [B, R] or None)."""
    lse = torch.logsumexp(logits, dim=-1)
    lp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = lse - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    return lp, entropy


def position_ids_of(attention_mask: Tensor) -> Tensor:
    """Positions counting real tokens only, so a left-padded prompt starts at 0 (as in generation)."""
    return (attention_mask.long().cumsum(1) - 1).clamp_min(0)


_LAYER_INDEX = re.compile(r"\.layers\.(\d+)\.")


def frozen_prefix_depth(peft_model: torch.nn.Module, adapters: list[str], num_layers: int) -> int:
    """How many bottom transformer layers carry no LoRA weight of any of ``adapters`` (0 when an adapter touches
    the embeddings or anything else below the first layer)."""
    depth = num_layers
    for mname, module in peft_model.named_modules():
        owned = [a for a in adapters if a in getattr(module, "lora_A", {}) or a in getattr(module, "lora_embedding_A", {})]
        if not owned:
            continue
        found = _LAYER_INDEX.search(mname)
        if found is None:
            if mname.endswith("lm_head"):
                continue  # above every layer
            return 0
        depth = min(depth, int(found.group(1)))
    for a in adapters:
        if getattr(peft_model.peft_config.get(a), "modules_to_save", None):
            return 0  # a trained copy of a whole module may sit anywhere
    return depth


@contextmanager
def _layers_cut(backbone: torch.nn.Module, start: int, stop: int | None = None):
    """The backbone runs only ``layers[start:stop]`` inside the block."""
    saved = backbone.layers
    backbone.layers = torch.nn.ModuleList(list(saved)[start:stop])
    try:
        yield
    finally:
        backbone.layers = saved


class PpoRoles:
    """One base model, its adapters and heads, and the forward passes PPO needs from each role.

    ``model``: a causal LM (not yet a ``PeftModel``) on its device. ``lora_config``: the peft ``LoraConfig`` for
    fresh adapters (policy without ``policy_from``, value without ``value_from``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        lora_config,
        *,
        policy_from: str | os.PathLike[str] | None = None,
        reference_from: str | os.PathLike[str] | None = None,
        value_from: str | os.PathLike[str] | None = None,
        seed: int = 0,
        share_frozen_layers: bool = True,
    ):
        self.hm = HeadedModel(model)
        if policy_from:
            self.hm.load_adapter(POLICY, policy_from, trainable=True)
        else:
            self.hm.add_adapter(POLICY, lora_config, head=False, seed=seed)
        self.reference: str | None = None
        if reference_from:
            self.hm.load_adapter(REFERENCE, reference_from, trainable=False)
            self.reference = REFERENCE
        if value_from:
            # e.g. the reward model: a value function that starts out knowing what is rewarded.
            self.hm.load_adapter(VALUE, value_from, trainable=True)
            self.hm.head_kind[VALUE] = "value"
        else:
            self.hm.add_adapter(VALUE, lora_config, head=True, kind="value", seed=seed + 1)
        if VALUE not in self.hm.heads:
            raise ValueError(f"{value_from}: the value adapter needs a scalar head (head.safetensors)")
        self.hm.eval()
        self.shared_depth = self._shared_depth() if share_frozen_layers else 0

    # ------------------------------------------------------------------ shared frozen layers
    def _shared_depth(self) -> int:
        backbone = self.hm.backbone()
        layers = getattr(backbone, "layers", None)
        if not isinstance(layers, torch.nn.ModuleList):
            return 0
        adapters = [POLICY, VALUE] + ([self.reference] if self.reference else [])
        depth = frozen_prefix_depth(self.hm.peft, adapters, len(layers))
        if depth <= 0 or depth >= len(layers):
            return 0
        # A probe: the split forward must give the full forward's hidden state on this architecture.
        self.shared_depth = depth
        ids = torch.arange(3, 11, device=self.device).remainder(self.transformer.config.vocab_size).unsqueeze(0)
        mask = torch.ones_like(ids)
        mask[:, :2] = 0
        try:
            with torch.no_grad():
                full = self._hidden(POLICY, ids, mask)
                split = self._hidden(POLICY, ids, mask, self.bottom(ids, mask))
        except (TypeError, ValueError, RuntimeError):
            return 0  # the backbone does not take inputs_embeds this way: run every role in full
        ok = torch.allclose(full[:, 2:].float(), split[:, 2:].float(), rtol=1e-3, atol=1e-4)
        return depth if ok else 0

    @torch.no_grad()
    def bottom(self, sequences: Tensor, attention_mask: Tensor) -> Tensor | None:
        """Hidden state [B, L, H] after the ``shared_depth`` bottom layers (the bare base's: no role has LoRA
        there), for the ``bottom=`` argument of the forwards; ``None`` when nothing is shared."""
        if not self.shared_depth:
            return None
        return self._run_bottom(input_ids=sequences, attention_mask=attention_mask,
                                position_ids=position_ids_of(attention_mask))

    def _run_bottom(self, **inputs) -> Tensor:
        backbone = self.hm.backbone()
        captured: list[Tensor] = []
        last = backbone.layers[self.shared_depth - 1]
        hook = last.register_forward_hook(lambda _m, _i, out: captured.append(out[0] if isinstance(out, tuple) else out))
        try:
            # No adapter has weights down there, so whichever is active computes the bare base (and peft's
            # disable_adapter refuses a model whose visible layers carry no adapter).
            with _layers_cut(backbone, 0, self.shared_depth):
                backbone(use_cache=False, **inputs)
        finally:
            hook.remove()
        return captured[-1]

    # ------------------------------------------------------------------ adapters
    def load_frozen(self, name: str, path: str | os.PathLike[str]) -> None:
        """Add a frozen adapter (reward model, safety classifier) with its head."""
        self.hm.load_adapter(name, Path(path), trainable=False)
        self.hm.eval()

    @property
    def transformer(self) -> torch.nn.Module:
        return self.hm.transformer()

    @property
    def device(self) -> torch.device:
        return next(self.hm.parameters()).device

    def parameters_of(self, name: str) -> list[torch.nn.Parameter]:
        return self.hm.trainable_parameters(name)

    # ------------------------------------------------------------------ forwards
    def _hidden(self, name: str | None, sequences: Tensor, attention_mask: Tensor, bottom: Tensor | None = None) -> Tensor:
        """Last hidden state [B, L, H] of role ``name``; with ``bottom`` (from :meth:`bottom` on the same rows) only
        the layers above the shared ones run."""
        positions = position_ids_of(attention_mask)
        if bottom is None:
            out = self.hm.run_backbone(name, input_ids=sequences, attention_mask=attention_mask,
                                       position_ids=positions, use_cache=False)
            return out.last_hidden_state
        with _layers_cut(self.hm.backbone(), self.shared_depth):
            out = self.hm.run_backbone(name, inputs_embeds=bottom, attention_mask=attention_mask,
                                       position_ids=positions, use_cache=False)
        return out.last_hidden_state

    def response_logits(self, name: str | None, sequences: Tensor, attention_mask: Tensor, prompt_width: int,
                        temperature: float = 1.0, bottom: Tensor | None = None) -> Tensor:
        """Logits [B, R, V] predicting each response token (positions P−1 … L−2), from role ``name`` (``None``: the
        bare base). Only the response positions go through the LM head: no [B, L, V] tensor is made."""
        hidden = self._hidden(name, sequences, attention_mask, bottom)[:, prompt_width - 1 : -1]
        logits = output_logits(self.transformer, hidden)
        return logits / temperature if temperature not in (0.0, 1.0) else logits

    def logprobs(self, name: str | None, sequences: Tensor, attention_mask: Tensor, prompt_width: int,
                 temperature: float = 1.0, with_entropy: bool = False,
                 bottom: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """(log-probabilities [B, R] of the response tokens, per-token entropy [B, R] or None)."""
        logits = self.response_logits(name, sequences, attention_mask, prompt_width, temperature, bottom)
        return _token_logprobs(logits, sequences[:, prompt_width:], with_entropy)

    def values(self, sequences: Tensor, attention_mask: Tensor, prompt_width: int,
               bottom: Tensor | None = None) -> Tensor:
        """V(state before each response token) [B, R] from the value adapter and its head."""
        hidden = self._hidden(VALUE, sequences, attention_mask, bottom)[:, prompt_width - 1 : -1]
        head = self.hm.heads[VALUE]
        return head(hidden.to(head.weight.dtype)).squeeze(-1)

    def reference_logprobs(self, sequences: Tensor, attention_mask: Tensor, prompt_width: int,
                           temperature: float = 1.0, bottom: Tensor | None = None) -> Tensor:
        return self.logprobs(self.reference, sequences, attention_mask, prompt_width, temperature, bottom=bottom)[0]

    # ------------------------------------------------------------------ packed forwards (engine.trainers.ppo.packing)
    @torch.no_grad()
    def packed_bottom(self, packed: PackedGroups) -> Tensor | None:
        """:meth:`bottom` of a packed row: [1, T, H], or ``None`` when nothing is shared."""
        if not self.shared_depth:
            return None
        with pairs_attention(self.transformer):
            return self._run_bottom(input_ids=packed.input_ids, position_ids=packed.position_ids,
                                    pair_segments=packed.segments)

    def packed_hidden(self, name: str | None, packed: PackedGroups, bottom: Tensor | None = None) -> Tensor:
        """Last hidden state [T, H] of role ``name`` on a packed row (with ``bottom`` from :meth:`packed_bottom`,
        only the layers above the shared ones run)."""
        inputs = {"position_ids": packed.position_ids, "pair_segments": packed.segments, "use_cache": False}
        with pairs_attention(self.transformer):
            if bottom is None:
                out = self.hm.run_backbone(name, input_ids=packed.input_ids, **inputs)
            else:
                with _layers_cut(self.hm.backbone(), self.shared_depth):
                    out = self.hm.run_backbone(name, inputs_embeds=bottom, **inputs)
        return out.last_hidden_state[0]

    def packed_logprobs(self, name: str | None, packed: PackedGroups, targets: Tensor, temperature: float = 1.0,
                        with_entropy: bool = False, bottom: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """(log-probabilities [N, R] of ``targets`` [N, R], the rows' response tokens; entropy [N, R] or None);
        zero past each row's response. Without entropy only the response positions go through the LM head, a few
        hundred at a time, and no [tokens, vocab] logits are kept for the backward (``engine.token_logprobs``)."""
        index, valid = packed.predicting_index(targets.shape[1])
        if not with_entropy:
            hidden = self.packed_hidden(name, packed, bottom)
            flat = valid.flatten().to(targets.device)
            lp = token_logprobs(self.transformer.get_output_embeddings(), hidden[index.flatten().to(targets.device)[flat]],
                                targets.flatten()[flat], temperature=temperature, **head_transform(self.transformer))
            rows = torch.nonzero(flat).squeeze(1)
            return lp.new_zeros(flat.shape[0]).index_put((rows,), lp).view(targets.shape), None
        hidden = self.packed_hidden(name, packed, bottom)[index.to(targets.device)]
        logits = output_logits(self.transformer, hidden)
        if temperature not in (0.0, 1.0):
            logits = logits / temperature
        lp, entropy = _token_logprobs(logits, targets, with_entropy)
        valid = valid.to(lp.device)
        return lp * valid, (entropy * valid if entropy is not None else None)

    def packed_values(self, packed: PackedGroups, width: int, bottom: Tensor | None = None) -> Tensor:
        """:meth:`values` [N, width] on a packed row; zero past each row's response."""
        index, valid = packed.predicting_index(width)
        head = self.hm.heads[VALUE]
        hidden = self.packed_hidden(VALUE, packed, bottom)[index.to(head.weight.device)]
        return head(hidden.to(head.weight.dtype)).squeeze(-1) * valid.to(head.weight.device)

    # ------------------------------------------------------------------ saving
    def save_policy(self, path: str | os.PathLike[str]) -> Path:
        return self.hm.save_adapter(POLICY, path)

    def save_value(self, path: str | os.PathLike[str]) -> Path:
        return self.hm.save_adapter(VALUE, path)

    def load_trainable_state(self, policy_dir: Path, value_dir: Path) -> None:
        """Put saved policy and value weights (a checkpoint's) into the existing adapters and the value head, in
        place, so an optimizer built on them keeps pointing at the right tensors."""
        self.hm.restore_adapter(POLICY, policy_dir)
        self.hm.restore_adapter(VALUE, value_dir)
