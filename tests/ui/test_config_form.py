"""The settings form's editors under the mouse wheel: a closed drop-down or spin box the pointer merely passes
over while the form scrolls keeps its value."""

from __future__ import annotations

from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication, QComboBox, QScrollArea, QSpinBox

from ui.config_form import ConfigForm
from workbench.configs import config_class


def _wheel(widget, steps: int = -1) -> None:
    centre = QPointF(widget.rect().center())
    event = QWheelEvent(centre, QPointF(widget.mapToGlobal(centre.toPoint())), QPoint(), QPoint(0, 120 * steps),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


def test_the_wheel_over_a_closed_drop_down_scrolls_the_form_not_the_value(qtbot):
    form = ConfigForm(config_class("rm"))
    area = QScrollArea()
    area.setWidget(form)
    area.setWidgetResizable(True)
    area.resize(500, 300)
    qtbot.addWidget(area)
    area.show()
    qtbot.waitExposed(area)
    combo = next(w for w in form.editors.values() if isinstance(w, QComboBox))
    spin = next(w for w in form.editors.values() if isinstance(w, QSpinBox))
    before = (combo.currentIndex(), spin.value(), area.verticalScrollBar().value())
    for w in (combo, spin):
        _wheel(w)
    assert (combo.currentIndex(), spin.value()) == before[:2]
    assert area.verticalScrollBar().value() > before[2]  # the form scrolled instead
    spin.setFocus()  # once chosen (click or Tab), the wheel changes it as usual
    qtbot.waitUntil(spin.hasFocus)
    _wheel(spin, steps=1)
    assert spin.value() != before[1]
