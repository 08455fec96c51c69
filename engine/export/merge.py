"""Base + adapter loaded in full precision, and merged into one model.

The base is always loaded unquantised in float32, whatever the run trained on (a QLoRA run's adapter is merged into
the full-precision base, not into 4-bit weights), and peft's ``merge_and_unload`` folds each LoRA update into its
layer. A reward model or safety classifier becomes a transformers sequence classifier: the merged transformer body
under ``*ForSequenceClassification``'s ``score`` layer, which holds the head's weight.

transformers' classifiers read the score at the last token that is not ``pad_token_id`` (our head reads the last
token of the attention mask: the same token for a conversation rendered by its chat template, which never ends on
the pad token), and their ``score`` layer has no bias, as our reward and safety heads have none: the exported
classifier scores exactly as the adapter and head did. A head saved with a bias by an earlier version cannot be
held by any weight of the model (nothing in a transformer holds a constant), so that bias is kept in
``config.json`` as ``score_bias`` (one value per output) and the model card says to add it to the logits.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from ..chat_templates import ChatTemplate, run_chat_template, template_for_model
from ..lora import load_adapter
from ..models import load_model, load_tokenizer
from ..reward_model import HeadedModel
from .source import REWARD_MODEL, ExportSource

HEADED_ADAPTER = "default"


def export_tokenizer(source: ExportSource, chat_template: str | None) -> Any:
    """The tokenizer the run saved with its adapter (so the template it trained with), or the base's; a chat
    template named for the export replaces it."""
    ref = str(source.adapter) if (source.adapter / "tokenizer_config.json").is_file() else source.base_ref
    with run_chat_template(SimpleNamespace(chat_template=chat_template, base_model=ref, adapter_from=None)):
        return load_tokenizer(ref)


def load_base(source: ExportSource, tokenizer: Any, device: str, *, trust_remote_code: bool = False):
    """The base model in float32, unquantised (its own tokenizer is not used: ``tokenizer``'s template stands in for
    a base that has none)."""
    template = ChatTemplate(tokenizer.chat_template, "the export's tokenizer")
    with template_for_model(source.base_ref, template):
        return load_model(source.base_ref, device=device, dtype="float32", quantize="none",
                          trust_remote_code=trust_remote_code).model


def with_adapter(base: Any, source: ExportSource) -> Any:
    """A causal LM adapter on the base (a PeftModel)."""
    return load_adapter(base, source.adapter)


def with_head(base: Any, source: ExportSource) -> HeadedModel:
    """A reward model or safety classifier: the base with the adapter and its head."""
    hm = HeadedModel(base)
    hm.load_adapter(HEADED_ADAPTER, source.adapter)
    hm.activate(HEADED_ADAPTER)
    return hm


def merge(peft_model: Any) -> Any:
    """The adapter folded into the base's weights (checked for NaNs by peft), as a plain transformers model."""
    merged = peft_model.merge_and_unload(safe_merge=True)
    merged.eval()
    return merged


def classifier(hm: HeadedModel, source: ExportSource, pad_token_id: int) -> tuple[Any, list[float] | None]:
    """The merged model as a transformers sequence classifier, and the head's bias when it is not zero."""
    from transformers import AutoModelForSequenceClassification

    head = hm.heads[HEADED_ADAPTER]
    merged = merge(hm.peft)
    config = copy.deepcopy(merged.config)
    config.architectures = None
    config.num_labels = head.out_features
    config.pad_token_id = pad_token_id
    if source.kind == REWARD_MODEL:
        config.problem_type = "regression"
        config.id2label, config.label2id = {0: "reward"}, {"reward": 0}
    else:
        config.problem_type = "multi_label_classification"
        labels = source.labels or [f"label_{i}" for i in range(head.out_features)]
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: i for i, label in enumerate(labels)}
    bias = None if head.bias is None else head.bias.detach().float().cpu()
    score_bias = None if bias is None or bool((bias == 0).all()) else [float(b) for b in bias]
    if score_bias is not None:
        config.score_bias = score_bias
    # Built on the meta device and given the merged body: no second copy of the weights is ever made.
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config)
    setattr(model, model.base_model_prefix, getattr(merged, merged.base_model_prefix))
    score = nn.Linear(head.in_features, head.out_features, bias=False)
    with torch.no_grad():
        score.weight.copy_(head.weight.detach().float())
    model.score = score.to(next(merged.parameters()).device)
    model.eval()
    return model, score_bias
