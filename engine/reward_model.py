"""Scalar (and multi-label) heads on named LoRA adapters of one frozen base: the reward model, the value model and
the safety classifier are all "base + adapter NAME + head NAME".

:class:`HeadedModel` wraps a causal LM (or a ``PeftModel`` of one) and keeps one ``nn.Linear`` head per adapter
name. Scoring runs the adapter-patched *backbone* only (``model.base_model``: the transformer without its LM head,
so no [B, L, vocab] logits are ever made) and reads the head at the last non-padding token of each row. PPO
keeps the policy, value and reward adapters on the same ``PeftModel``: ``add_adapter``/``load_adapter`` more names
and call :meth:`HeadedModel.score` with the one wanted; the policy's own LM head is untouched.

On disk an adapter folder is exactly what ``PeftModel.from_pretrained`` loads (``adapter_config.json`` +
``adapter_model.safetensors``), plus ``head.safetensors`` beside it: the head's weight (and bias, for a value
head), with its kind, output labels and hidden size in the safetensors metadata. Nothing is ever unpickled.

The reward and safety heads have no bias, like the ``score`` layer of transformers' sequence classifiers, so an
exported classifier computes exactly what the head did (no weight of a transformer can hold a constant). A reward's
bias would get no gradient from the Bradley–Terry loss anyway, and a safety classifier learns its labels' base
rates from the last token's features (always the chat template's end-of-turn token, whose own embedding gives the
head a near-constant feature). The value head keeps its bias: it predicts returns, whose mean is far
from zero, and it is never exported. (Heads saved with a bias, by earlier versions, load with it.)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

HEAD_FILE = "head.safetensors"
BIASED_HEAD_KINDS = frozenset({"value"})

# How to load a saved headed adapter (a reward model, a safety classifier), as the model card shows it.
HEADED_USAGE = (
    "from engine.reward_model import HeadedModel",
    "scorer = HeadedModel(base_model)",
    "scorer.load_adapter('reward', 'path/to/this/folder')",
    "scores = scorer.score('reward', input_ids, attention_mask)",
)


def last_token_index(attention_mask: Tensor) -> Tensor:
    """Index [B] of the last position whose mask is 1, for left or right padding alike."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.to(torch.long) * positions).argmax(dim=1)


def read_head_meta(path: str | os.PathLike[str]) -> dict[str, object]:
    """The metadata of an adapter folder's head (kind, labels, hidden size, out features), without loading torch
    tensors; empty when the folder has no head."""
    f = Path(path) / HEAD_FILE
    if not f.is_file():
        return {}
    from safetensors import safe_open

    with safe_open(str(f), framework="pt") as h:
        meta = h.metadata() or {}
    return {
        "kind": meta.get("kind", ""),
        "labels": json.loads(meta.get("labels", "[]")),
        "hidden_size": int(meta.get("hidden_size", 0)),
        "out_features": int(meta.get("out_features", 1)),
    }


class HeadedModel(nn.Module):
    """One frozen base with named LoRA adapters, each optionally carrying a linear head (scalar or multi-label).

    ``model``: a transformers causal LM (or any ``PreTrainedModel`` with a ``base_model`` backbone), already wrapped
    as a ``PeftModel`` or not (the first :meth:`add_adapter`/:meth:`load_adapter` wraps it). Base weights are
    frozen here; only the LoRA weights of trainable adapters and their heads get gradients.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.heads = nn.ModuleDict()
        self.head_kind: dict[str, str] = {}
        self.head_labels: dict[str, list[str]] = {}
        self.trainable: set[str] = set()
        self._active: str | None = None
        if not isinstance(model, PeftModel):
            for p in model.parameters():
                p.requires_grad_(False)

    # ------------------------------------------------------------------ adapters and heads
    @property
    def peft(self) -> PeftModel:
        if not isinstance(self.model, PeftModel):
            raise RuntimeError("the model has no adapter yet: call add_adapter or load_adapter first")
        return self.model

    @property
    def hidden_size(self) -> int:
        cfg = self.transformer().config
        return int(getattr(cfg, "hidden_size", None) or cfg.get_text_config().hidden_size)

    def adapter_names(self) -> list[str]:
        return list(self.model.peft_config) if isinstance(self.model, PeftModel) else []

    def add_adapter(
        self,
        name: str,
        lora_config: LoraConfig,
        *,
        head: bool = True,
        out_features: int = 1,
        kind: str = "reward",
        labels: Sequence[str] = (),
        seed: int | None = None,
    ) -> None:
        """A fresh, trainable LoRA adapter ``name`` (and a fresh head with ``out_features`` outputs)."""
        if seed is not None:
            torch.manual_seed(seed)
        if isinstance(self.model, PeftModel):
            if name in self.model.peft_config:
                raise ValueError(f"adapter {name!r} already exists")
            self.model.add_adapter(name, lora_config)
        else:
            self.model = get_peft_model(self.model, lora_config, adapter_name=name)
        self.trainable.add(name)
        if head:
            self.add_head(name, out_features=out_features, kind=kind, labels=labels)
        self._refresh_grads()

    def adopt_adapter(self, name: str, *, trainable: bool = True) -> None:
        """Take over an adapter already on the wrapped ``PeftModel`` (e.g. attached by ``engine.lora``)."""
        if name not in self.adapter_names():
            raise KeyError(f"no adapter named {name!r}")
        (self.trainable.add if trainable else self.trainable.discard)(name)
        self._active = None
        self._refresh_grads()

    def add_head(self, name: str, *, out_features: int = 1, kind: str = "reward", labels: Sequence[str] = ()) -> None:
        """A fresh head for adapter ``name`` (trainable when the adapter is)."""
        lin = nn.Linear(self.hidden_size, out_features, bias=kind in BIASED_HEAD_KINDS)
        # OpenAI's lm-human-preferences initialises the reward head with std 1/sqrt(d+1): rewards start near
        # unit scale instead of the tiny values a 0.02 init gives, so early margins matter.
        nn.init.normal_(lin.weight, std=1.0 / (self.hidden_size + 1) ** 0.5)
        if lin.bias is not None:
            nn.init.zeros_(lin.bias)
        self._set_head(name, lin, kind, labels)
        self._refresh_grads()

    def load_adapter(self, name: str, path: str | os.PathLike[str], *, trainable: bool = False) -> None:
        """Load an adapter folder (and its head, when it has one) under ``name``."""
        path = Path(path)
        if not (path / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{path}: not an adapter folder (no adapter_config.json)")
        if isinstance(self.model, PeftModel):
            self.model.load_adapter(str(path), adapter_name=name, is_trainable=trainable)
        else:
            self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name, is_trainable=trainable)
        if trainable:
            self.trainable.add(name)
        else:
            self.trainable.discard(name)
        if (path / HEAD_FILE).is_file():
            self.load_head(name, path)
        self._active = None
        self._refresh_grads()

    def _set_head(self, name: str, lin: nn.Linear, kind: str, labels: Sequence[str]) -> None:
        device = next(self.model.parameters()).device
        self.heads[name] = lin.to(device=device, dtype=torch.float32)
        self.head_kind[name] = kind
        self.head_labels[name] = list(labels)

    def load_head(self, name: str, path: str | os.PathLike[str]) -> None:
        f = Path(path) / HEAD_FILE
        tensors = load_file(str(f))
        meta = read_head_meta(path)
        weight = tensors["weight"]
        if weight.shape[1] != self.hidden_size:
            raise ValueError(
                f"{f}: head expects hidden size {weight.shape[1]}, the base model has {self.hidden_size} "
                "(was it trained on another base?)"
            )
        lin = nn.Linear(weight.shape[1], weight.shape[0], bias="bias" in tensors)
        with torch.no_grad():
            lin.weight.copy_(weight)
            if lin.bias is not None:
                lin.bias.copy_(tensors["bias"])
        self._set_head(name, lin, str(meta.get("kind", "")), list(meta.get("labels", [])))  # type: ignore[arg-type]
        self._refresh_grads()

    def save_adapter(self, name: str, path: str | os.PathLike[str]) -> Path:
        """Write adapter ``name`` as a folder ``PeftModel.from_pretrained`` loads, with its head beside it."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        # peft writes a non-default adapter into a sub-folder named after it; write to a scratch folder and move
        # the files, so every adapter folder looks the same whatever name it had in memory.
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            self.peft.save_pretrained(tmp, selected_adapters=[name])
            src = Path(tmp) if name == "default" else Path(tmp) / name
            for f in src.iterdir():
                if f.is_file():
                    shutil.move(str(f), str(out / f.name))
        if name in self.heads:
            self.save_head(name, out)
        return out

    def save_head(self, name: str, path: str | os.PathLike[str]) -> None:
        lin = self.heads[name]
        tensors = {"weight": lin.weight}
        if lin.bias is not None:
            tensors["bias"] = lin.bias
        save_file(
            {key: t.detach().float().cpu().contiguous() for key, t in tensors.items()},
            str(Path(path) / HEAD_FILE),
            metadata={
                "kind": self.head_kind.get(name, ""),
                "labels": json.dumps(self.head_labels.get(name, [])),
                "hidden_size": str(lin.in_features),
                "out_features": str(lin.out_features),
                "adapter_name": name,
            },
        )

    def restore_adapter(self, name: str, path: str | os.PathLike[str]) -> None:
        """Put the weights of a folder :meth:`save_adapter` wrote (a checkpoint's) into the existing adapter ``name``
        and its head, in place, so an optimizer built on them keeps pointing at the right tensors."""
        from .lora import load_adapter_weights

        load_adapter_weights(self.peft, path, name)
        if name in self.heads:
            tensors = load_file(str(Path(path) / HEAD_FILE))
            head = self.heads[name]
            with torch.no_grad():
                head.weight.copy_(tensors["weight"])
                if head.bias is not None:
                    head.bias.copy_(tensors["bias"])

    # ------------------------------------------------------------------ switching and gradients
    def activate(self, name: str | None) -> None:
        """Make ``name`` the adapter the forward pass uses (``None``: the bare base, adapters disabled).

        peft's ``set_adapter`` also freezes every other adapter; the trainable ones get their gradients back here,
        so PPO can switch between policy and value without losing either.
        """
        if name == self._active:
            return
        if name is None:
            self._active = None
            return
        if name not in self.adapter_names():
            raise KeyError(f"no adapter named {name!r} (have {', '.join(self.adapter_names()) or 'none'})")
        self.peft.set_adapter(name)
        self._active = name
        self._refresh_grads()

    def _refresh_grads(self) -> None:
        if isinstance(self.model, PeftModel):
            names = set(self.adapter_names())
            for pname, p in self.model.named_parameters():
                parts = pname.split(".")
                owner = next((part for part in parts if part in names), None)
                p.requires_grad_(owner is not None and owner in self.trainable and "lora_" in pname)
        for hname, head in self.heads.items():
            head.requires_grad_(hname in self.trainable)

    def trainable_parameters(self, name: str) -> list[nn.Parameter]:
        """The LoRA weights of adapter ``name`` and its head: what the optimizer of that role updates."""
        params = [
            p for pname, p in self.model.named_parameters() if "lora_" in pname and name in pname.split(".")
        ]
        if name in self.heads:
            params.extend(self.heads[name].parameters())
        return params

    # ------------------------------------------------------------------ forward
    def transformer(self) -> nn.Module:
        """The causal LM under the peft wrapper (its layers carry the LoRA patches)."""
        return self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model

    def backbone(self) -> nn.Module:
        """The transformer body without the LM head (``LlamaModel`` for a ``LlamaForCausalLM``)."""
        return self.transformer().base_model

    def run_backbone(self, name: str | None, **kwargs) -> object:
        """Run the backbone with adapter ``name`` active (``None``: the bare base); returns the model output."""
        self.activate(name)
        if name is None and isinstance(self.model, PeftModel):
            with self.model.disable_adapter():
                return self.backbone()(**kwargs)
        return self.backbone()(**kwargs)

    def head_at_last(self, name: str, hidden: Tensor, attention_mask: Tensor) -> Tensor:
        """Apply head ``name`` to the hidden state [B, L, H] at each row's last real token: [B, out_features]."""
        idx = last_token_index(attention_mask)
        h = hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]
        head = self.heads[name]
        return head(h.to(head.weight.dtype))

    def score(self, name: str, input_ids: Tensor, attention_mask: Tensor, **kwargs) -> Tensor:
        """Head ``name`` on adapter ``name`` at the last real token of each row: [B, out_features]."""
        out = self.run_backbone(name, input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
        return self.head_at_last(name, out.last_hidden_state, attention_mask)

    def reward(self, name: str, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Scalar reward [B] (head ``name`` must have one output)."""
        return self.score(name, input_ids, attention_mask).squeeze(-1)


def pair_rewards(model: HeadedModel, name: str, batch) -> tuple[Tensor, Tensor]:
    """Rewards (chosen [B], rejected [B]) of adapter ``name`` on a :class:`engine.rm_data.PairBatch`.

    ``padded``: one forward over the [2B, L] rows. ``packed``: one forward over the packed row with the
    ``wb_pairs`` attention (each pair's prompt encoded once), the rewards read at the last token of each response.
    """
    if batch.layout == "padded":
        r = model.reward(name, batch.input_ids, batch.attention_mask)
        b = batch.size
        return r[:b], r[b:]
    from .pair_attention import pairs_attention

    model.activate(name)
    with pairs_attention(model.transformer()):
        out = model.backbone()(
            input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False, pair_segments=batch.segments
        )
    hidden = out.last_hidden_state[0]
    head = model.heads[name]
    h = torch.cat([hidden.index_select(0, batch.chosen_last), hidden.index_select(0, batch.rejected_last)])
    r = head(h.to(head.weight.dtype)).squeeze(-1)
    b = batch.size
    return r[:b], r[b:]


def packed_scores(model: HeadedModel, name: str, sequences: Sequence[Sequence[int]]) -> Tensor:
    """Head ``name`` at the last token of each sequence [N, out_features], the sequences packed into one row
    without padding (each attends only to itself)."""
    ids: list[int] = []
    pos: list[int] = []
    segments: list[tuple[int, int, int, int]] = []
    for seq in sequences:
        start = len(ids)
        ids.extend(seq)
        pos.extend(range(len(seq)))
        # a single sequence is a "pair" whose chosen part is the whole sequence and whose rejected part is empty
        segments.append((start, start, len(ids), len(ids)))
    device = next(model.heads[name].parameters()).device
    return head_at_packed(model, name, torch.tensor([ids], device=device), torch.tensor([pos], device=device),
                          segments, torch.tensor([s[2] - 1 for s in segments], device=device))


def head_at_packed(model: HeadedModel, name: str, input_ids: Tensor, position_ids: Tensor,
                   segments: Sequence[tuple[int, ...]], positions: Tensor) -> Tensor:
    """Head ``name`` [N, out_features] at ``positions`` [N] of a packed row (``input_ids``/``position_ids``
    [1, T]) run with adapter ``name`` under the ``wb_pairs`` attention (``segments`` in its format)."""
    from .pair_attention import pairs_attention

    model.activate(name)
    with pairs_attention(model.transformer()):
        out = model.backbone()(input_ids=input_ids, position_ids=position_ids, use_cache=False,
                               pair_segments=list(segments))
    head = model.heads[name]
    hidden = out.last_hidden_state[0].index_select(0, positions.to(out.last_hidden_state.device))
    return head(hidden.to(head.weight.dtype))
