"""Safety labels by keys, shared by the Compare and Rank pages.

- Flagging: F, then what (L/R/P, or a response's number), then a category number, then a severity number (1 low,
  2 medium, 3 high). Each flag is one committed store call.
- C, checked, nothing harmful: every response on screen without a flag gets every category recorded absent (the
  safety classifier's negatives), refused while anything is folded; U takes the labels back.

A page mixes in :class:`FlaggingMixin`, gives it a ``flag_bar`` label, a ``fold`` (:class:`ui.folding.FoldedItem`),
an ``undo_stack`` and a ``feedback`` label, and implements ``flag_targets()`` (key → (label, response id or None
for the prompt)) and ``flag_done(flag_id, target_label)``.
"""

from __future__ import annotations

from workbench.taxonomy import SEVERITIES

from .folding import REVEAL_FIRST


class FlaggingMixin:
    flag_state: dict | None = None

    def flag_targets(self) -> dict[str, tuple[str, int | None]]:
        raise NotImplementedError

    def flag_prompt_id(self) -> int | None:
        raise NotImplementedError

    def flag_done(self, flag_id: int, target: str) -> None:
        raise NotImplementedError

    def scopes(self) -> list[str]:
        return ["flag"] if self.flag_state is not None else [self.name]

    def act_flag(self, _k: str) -> None:
        if self.flag_prompt_id() is None:
            return
        targets = self.flag_targets()
        self.flag_state = {"step": "target", "targets": targets}
        choices = " · ".join(f"<b>{k}</b> {label}" for k, (label, _) in targets.items())
        self.flag_bar.setText(f"Flag what?  {choices} · Esc cancels")
        self.flag_bar.show()

    def _flag_press(self, key: str) -> None:
        st = self.flag_state
        if st is None:
            return
        if st["step"] == "target":
            if key not in st["targets"]:
                return
            st["label"], st["response_id"] = st["targets"][key]
            st["step"] = "category"
            st["categories"] = self.project.categories()[:10]
            items = " · ".join(f"<b>{(i + 1) % 10}</b> {label}" for i, (_, label, _, _) in enumerate(st["categories"]))
            self.flag_bar.setText(f"Flag {st['label']} — category: {items} · Esc cancels")
        elif st["step"] == "category" and key.isdigit():
            i = (int(key) - 1) % 10
            if i >= len(st["categories"]):
                return
            st["category"], label = st["categories"][i][0], st["categories"][i][1]
            st["step"] = "severity"
            self.flag_bar.setText(
                f"Flag {st['label']} as <b>{label}</b> — severity: <b>1</b> low · <b>2</b> medium · <b>3</b> high · Esc cancels"
            )
        elif st["step"] == "severity" and key in ("1", "2", "3"):
            severity = SEVERITIES[int(key) - 1]
            fid = self.project.add_flag(self.flag_prompt_id(), st["category"], severity, response_id=st["response_id"])
            self.flag_state = None
            self.flag_bar.hide()
            self.session.notify(flags=1, action=1)
            self.flag_done(fid, f"{st['label']}: {st['category'].replace('_', ' ')}, {severity}")

    def act_target_left(self, _k: str) -> None:
        self._flag_press("L")

    def act_target_right(self, _k: str) -> None:
        self._flag_press("R")

    def act_target_prompt(self, _k: str) -> None:
        self._flag_press("P")

    def act_choose_digit(self, key: str) -> None:
        self._flag_press(key)

    def act_cancel(self, _k: str) -> None:
        self.flag_state = None
        self.flag_bar.hide()

    # ------------------------------------------------------------------ checked, nothing harmful
    def act_check_safe(self, _k: str) -> None:
        prompt_id = self.flag_prompt_id()
        if prompt_id is None:
            return
        if self.fold.folded:
            self.refuse(REVEAL_FIRST + ": read the responses before marking them harmless (R).")
            return
        made, checked = [], []
        for label, rid in self.flag_targets().values():
            if rid is not None and not self.project.flags_for_response(rid):
                made += self.project.check_nothing_harmful(prompt_id, rid)
                checked.append(label)
        if not checked:
            self.refuse("Every response on screen is flagged: nothing to mark as harmless.")
            return
        self.undo_stack.append(("check", made))
        self.session.notify(action=1)
        self.feedback.setText(f"Checked, nothing harmful: {', '.join(checked)}. U undoes.")

    def undo_check(self, label_ids: list[int]) -> None:
        """Take back one "checked, nothing harmful" (all its labels at once)."""
        self.project.retract_all([("flag", fid) for fid in label_ids])
        self.session.notify(action=-1)
        self.feedback.setText("Undone: the responses are no longer marked as checked.")
