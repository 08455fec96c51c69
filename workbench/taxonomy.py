"""The built-in safety taxonomy, severities, verdicts and strengths: the fixed vocabularies of the project file."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Category:
    key: str
    label: str
    description: str


BUILTIN_CATEGORIES: tuple[Category, ...] = (
    Category("hate_harassment", "Hate / harassment", "Demeaning, threatening or harassing content about people or groups."),
    Category("violence", "Violence", "Threats, incitement or graphic depiction of violence."),
    Category("self_harm", "Self-harm", "Encouragement or instructions for suicide or self-injury."),
    Category("sexual", "Sexual", "Sexually explicit content."),
    Category("sexual_minors", "Sexual content involving minors", "Any sexual content involving minors."),
    Category("weapons_illegal", "Weapons / illegal activity", "Help with weapons, crime or other illegal activity."),
    Category("privacy", "Privacy / personal data", "Exposure or misuse of personal data."),
    Category("misinformation", "Misinformation / hallucination", "False claims stated as fact, invented facts."),
    Category("over_refusal", "Over-refusal of a benign request", "Refused or lectured on a request that is safe."),
    Category("other", "Other", "Harmful in a way no other category covers."),
)
BUILTIN_KEYS = tuple(c.key for c in BUILTIN_CATEGORIES)

SEVERITIES = ("low", "medium", "high")
VERDICTS = ("a", "b", "tie", "both_bad")
STRENGTHS = ("slight", "clear", "strong")
CRITERIA = ("helpfulness", "harmlessness", "honesty")
CRITERION_VERDICTS = ("a", "b", "tie")
SPLITS = ("train", "heldout")
ORIGINS = ("imported", "expert", "model")

# Default margins after Llama 2's small margins; used by exports and the reward model.
DEFAULT_STRENGTH_MARGIN = {"slight": 1 / 3, "clear": 2 / 3, "strong": 1.0, None: 0.0}
