"""A form generated from a run-config dataclass (``workbench.configs``): one editor per field, its help text as
the tooltip, its type deciding the editor. Reading the form back goes through ``Config.from_dict``, so a bad value
is reported exactly as in a YAML file (an :class:`~workbench.errors.InputError` naming the field).

Editors: a check box for ``bool`` (a drop-down of auto, yes and no for ``bool | None``); a drop-down for fields
with a known set of choices (``CHOICES``, or the field's own ``choices``); a spin box for a plain
``int`` with a minimum; a line edit for everything else, read as YAML (so ``2e-4``, ``null``, ``[q_proj, v_proj]``
and ``{slight: 0.3}`` all work, and an empty box means none).
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml
from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QWidget,
)

from workbench.configs import ModelConfig
from workbench.errors import InputError

from .widgets import guard_wheel

CHOICES: dict[str, tuple[str, ...]] = {
    "device": ("auto", "cpu", "cuda", "mps"),
    "dtype": ("auto", "float32", "bfloat16", "float16"),
    "quantize": ("auto", "4bit", "none"),
}  # fields whose config declares its own choices (metadata "choices") get a drop-down of those too
# An optional bool (none: the engine decides) gets a drop-down, since a check box cannot say "none".
TRISTATE = {"auto": None, "yes": True, "no": False}
EDITABLE_CHOICES = {"device"}  # cuda:1 and the like

PRESETS_DIR = Path(__file__).resolve().parent.parent / "resources" / "presets"


def load_presets(folder: Path = PRESETS_DIR) -> dict[str, dict[str, Any]]:
    """Preset files by title: ``{"title", "description", "settings"}`` (YAML in resources/presets)."""
    out: dict[str, dict[str, Any]] = {}
    for p in sorted(folder.glob("*.yaml")):
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        if isinstance(data, dict) and isinstance(data.get("settings"), dict):
            out[str(data.get("title") or p.stem)] = {"file": str(p), **data}
    return out


def _plain(hint: Any) -> tuple[Any, bool]:
    """(the type, whether None is allowed) of a field's type hint."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType")):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return (args[0] if len(args) == 1 else Any), True
    return hint, False


def _to_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    if isinstance(value, float):
        return repr(value)
    return str(value)


class ConfigForm(QWidget):
    """Edits every field of one config class except those in ``skip`` (the page edits those itself)."""

    changed = Signal()

    def __init__(self, cls: type[ModelConfig], skip: tuple[str, ...] = (), parent: QWidget | None = None):
        super().__init__(parent)
        self.cls = cls
        self.skip = set(skip)
        self.editors: dict[str, QWidget] = {}
        self.labels: dict[str, QLabel] = {}
        self.kinds: dict[str, str] = {}
        hints = typing.get_type_hints(cls)
        defaults = cls()
        form = QFormLayout(self)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        for f in dataclasses.fields(cls):
            if f.name in self.skip:
                continue
            hint, optional = _plain(hints[f.name])
            help_text = f.metadata.get("help", "")
            if hint is bool and optional:
                w = QComboBox()
                w.addItems(list(TRISTATE))
                w.currentTextChanged.connect(self.changed)
                kind = "tristate"
            elif hint is bool:
                w: QWidget = QCheckBox()
                w.toggled.connect(self.changed)
                kind = "bool"
            elif f.name in CHOICES or f.metadata.get("choices"):
                w = QComboBox()
                w.addItems(list(CHOICES.get(f.name) or f.metadata["choices"]))
                w.setEditable(f.name in EDITABLE_CHOICES)
                w.currentTextChanged.connect(self.changed)
                kind = "choice"
            elif hint is int and not optional:
                w = QSpinBox()
                w.setRange(int(f.metadata.get("min", 0)), int(f.metadata.get("max", 10**9)))
                w.valueChanged.connect(self.changed)
                kind = "int"
            else:
                w = QLineEdit()
                w.setPlaceholderText("none" if optional else "")
                w.textChanged.connect(self.changed)
                kind = "text"
            if isinstance(w, (QComboBox, QSpinBox)):
                guard_wheel(w)  # scrolling the form over a closed drop-down must not change the value
            w.setObjectName(f"field_{f.name}")
            w.setToolTip(f"<b>{f.name}</b><br>{help_text}")
            label = QLabel(f.name.replace("_", " "))
            label.setToolTip(help_text)
            form.addRow(label, w)
            self.editors[f.name] = w
            self.labels[f.name] = label
            self.kinds[f.name] = kind
        self.set_values(dataclasses.asdict(defaults))

    # ------------------------------------------------------------------ values
    def set_value(self, name: str, value: Any) -> bool:
        w = self.editors.get(name)
        if w is None:
            return False
        kind = self.kinds[name]
        if kind == "bool":
            w.setChecked(bool(value))
        elif kind == "tristate":
            w.setCurrentText(next(k for k, v in TRISTATE.items() if v is (None if value is None else bool(value))))
        elif kind == "choice":
            i = w.findText(str(value))
            if i >= 0:
                w.setCurrentIndex(i)
            elif w.isEditable():
                w.setEditText(str(value))
        elif kind == "int":
            w.setValue(int(value))
        else:
            w.setText(_to_text(value))
        return True

    def set_values(self, values: dict[str, Any]) -> list[str]:
        """Fill the editors from a mapping; returns the keys this form has no field for."""
        return [k for k, v in values.items() if not self.set_value(k, v)]

    def raw_values(self) -> dict[str, Any]:
        """The editors' values as Python objects (line edits read as YAML; an empty one is None)."""
        out: dict[str, Any] = {}
        for name, w in self.editors.items():
            kind = self.kinds[name]
            if kind == "bool":
                out[name] = w.isChecked()
            elif kind == "tristate":
                out[name] = TRISTATE[w.currentText()]
            elif kind == "choice":
                out[name] = w.currentText()
            elif kind == "int":
                out[name] = w.value()
            else:
                text = w.text().strip()
                if not text:
                    out[name] = None if name != "name" else ""
                    continue
                try:
                    value = yaml.safe_load(text)
                except yaml.YAMLError as e:
                    raise InputError(f"not a readable value: {text!r}", field=name) from e
                hint, _ = _plain(typing.get_type_hints(self.cls)[name])
                if hint is str and not isinstance(value, str):
                    value = text  # a run name or a path that YAML reads as a number stays text
                elif hint in (float, int) and isinstance(value, str):
                    try:  # YAML 1.1 reads 1e-05 (no dot) as text
                        value = float(value) if hint is float else int(value)
                    except ValueError:
                        pass
                out[name] = value
        return out

    def config(self, **extra: Any) -> ModelConfig:
        """The config these editors (plus ``extra`` for the skipped fields) describe; InputError names a bad field."""
        values = self.raw_values()
        values.update(extra)
        values = {k: v for k, v in values.items() if not (v is None and self._has_non_none_default(k))}
        return self.cls.from_dict(values)

    def _has_non_none_default(self, name: str) -> bool:
        f = next(f for f in dataclasses.fields(self.cls) if f.name == name)
        default = f.default if f.default is not dataclasses.MISSING else None
        _, optional = _plain(typing.get_type_hints(self.cls)[name])
        return not optional and default is not None

    def mark_error(self, name: str | None) -> None:
        """Outline the editor of a bad field (None clears every mark)."""
        for n, w in self.editors.items():
            w.setStyleSheet("border: 2px solid #d33;" if n == name else "")
