"""An Ollama ``Modelfile`` for an exported GGUF, its TEMPLATE and stop words derived from the model's chat template.

Ollama writes prompts with Go templates, not Jinja, so the Jinja template cannot be copied; it is measured instead.
Rendering conversations made of marker strings shows the text around each turn: a preamble (say a BOS token), a
prefix and suffix per role, the generation prompt, a default system prompt the template adds when a conversation
has none (becomes the Modelfile's ``SYSTEM``), and whether a system message gets a turn of its own or opens the
first user turn (Gemma). The Go template emits exactly those pieces. Before it is written, the same pieces are
assembled in Python for several conversations and compared with the Jinja rendering: a template that does more
than wrap turns (tools, content-dependent logic) is refused rather than exported subtly wrong.

Stop words: the marker-like tokens (``<...>``) that end an assistant turn or open a user turn, as Ollama's own
Modelfiles for ChatML, Llama 3 and Gemma list them. A preamble that is only the BOS token is left out when the
GGUF makes llama.cpp add BOS itself (``tokenizer.ggml.add_bos_token``), so it is not doubled.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..model_errors import ModelError

MODELFILE = "Modelfile"
_S, _U1, _A1, _U2 = "QQSYSTEMQQ", "QQUSERONEQQ", "QQASSISTANTQQ", "QQUSERTWOQQ"
_MARKER = re.compile(r"<[^<>\s]{1,40}>")

Render = Callable[[Sequence[dict[str, str]], bool], str]


@dataclass
class TurnFormat:
    """The text a chat template puts around each turn."""

    preamble: str
    user: tuple[str, str]
    assistant: tuple[str, str]
    generation: str
    system: tuple[str, str] | None = None     # a turn of its own: prefix, suffix
    system_separator: str | None = None       # or: opens the first user turn, then this separator
    default_system: str | None = None         # what the template says when the conversation has no system message

    def render(self, messages: Sequence[dict[str, str]], generation_prompt: bool) -> str:
        """The conversation as the Go template writes it (the Python twin of :meth:`go_template`)."""
        out, pending = [self.preamble], ""
        for m in messages:
            role, content = m["role"], m["content"]
            if role == "system":
                if self.system is not None:
                    out += [self.system[0], content, self.system[1]]
                elif self.system_separator is not None:
                    pending = content
            elif role == "user":
                opening = pending + self.system_separator if pending and self.system_separator is not None else ""
                pending = ""
                out += [self.user[0], opening, content, self.user[1]]
            elif role == "assistant":
                out += [self.assistant[0], content, self.assistant[1]]
        if generation_prompt:
            out.append(self.generation)
        return "".join(out)

    def go_template(self) -> str:
        def lit(text: str) -> str:
            return f"{{{{ {json.dumps(text, ensure_ascii=False)} }}}}" if text else ""

        lines = []
        if self.system_separator is not None:
            lines.append('{{- $system := "" }}')
        head = lit(self.preamble)
        lines.append(f"{head}{{{{- range .Messages }}}}" if head else "{{- range .Messages }}")
        if self.system is not None:
            lines.append(f'{{{{- if eq .Role "system" }}}}{lit(self.system[0])}{{{{ .Content }}}}{lit(self.system[1])}')
        elif self.system_separator is not None:
            lines.append('{{- if eq .Role "system" }}{{ $system = .Content }}')
        else:
            lines.append('{{- if eq .Role "system" }}')
        lines.append(
            f'{{{{- else if eq .Role "user" }}}}{lit(self.user[0])}'
            + ('{{ if $system }}{{ $system }}' + lit(self.system_separator or "") + '{{ $system = "" }}{{ end }}'
               if self.system_separator is not None else "")
            + f"{{{{ .Content }}}}{lit(self.user[1])}"
        )
        lines.append(f'{{{{- else if eq .Role "assistant" }}}}{lit(self.assistant[0])}{{{{ .Content }}}}'
                     f'{lit(self.assistant[1])}')
        lines.append("{{- end }}")
        lines.append(f"{{{{- end }}}}{lit(self.generation)}")
        return "\n".join(lines)

    def stop_words(self) -> list[str]:
        words = _MARKER.findall(self.assistant[1]) + _MARKER.findall(self.user[0])
        if not words:
            words = [w for w in (self.assistant[1].strip(), self.user[0].strip()) if w]
        return list(dict.fromkeys(words))


def _split(text: str, marker: str, where: str) -> tuple[str, str]:
    if text.count(marker) != 1:
        raise ModelError(f"Ollama export: the chat template does not write {where} once as given, so no Modelfile "
                         "template can be derived from it")
    before, after = text.split(marker)
    return before, after


def _after(text: str, prefix: str) -> str:
    if not text.startswith(prefix):
        raise ModelError("Ollama export: the chat template writes earlier turns differently once later turns follow, "
                         "so no Modelfile template can be derived from it")
    return text[len(prefix):]


def turn_format(render: Render) -> TurnFormat:
    """Measure a chat template (``render(messages, add_generation_prompt)``) turn by turn, and check the result."""
    user1, user2, asst = ({"role": "user", "content": _U1}, {"role": "user", "content": _U2},
                          {"role": "assistant", "content": _A1})
    r_u = render([user1], False)
    head, user_suffix = _split(r_u, _U1, "the user's message")
    generation = _after(render([user1], True), r_u)
    r_ua = render([user1, asst], False)
    assistant_prefix, assistant_suffix = _split(_after(r_ua, r_u), _A1, "the assistant's message")
    user_prefix, tail = _split(_after(render([user1, asst, user2], False), r_ua), _U2, "the second user message")
    if tail != user_suffix or not head.endswith(user_prefix):
        raise ModelError("Ollama export: the chat template wraps user turns differently by position, so no "
                         "Modelfile template can be derived from it")
    preamble = head[: len(head) - len(user_prefix)]
    fmt = TurnFormat(preamble=preamble, user=(user_prefix, user_suffix),
                     assistant=(assistant_prefix, assistant_suffix), generation=generation)
    try:
        r_su = render([{"role": "system", "content": _S}, user1], False)
    except Exception:  # noqa: BLE001 - a template without system turns may raise
        r_su = None
    if r_su is not None:
        before, between = _split(r_su, _S, "the system message")
        between, rest = _split(between, _U1, "the user's message after a system message")
        if before == head:
            fmt.system_separator = between
        elif between.endswith(user_prefix):
            system_suffix = between[: len(between) - len(user_prefix)]
            if before.startswith(preamble):
                fmt.system = (before[len(preamble):], system_suffix)
            elif preamble.startswith(before) and preamble.endswith(system_suffix):
                # The template's own system turn when there is none: the Modelfile's SYSTEM, written by the same
                # system turn (prefix folded into it: it always comes first).
                fmt.default_system = preamble[len(before): len(preamble) - len(system_suffix)]
                fmt.preamble, fmt.system = "", (before, system_suffix)
        if fmt.system is None and fmt.system_separator is None:
            raise ModelError("Ollama export: the chat template places the system message in a way no Modelfile "
                             "template can follow")
    _check(fmt, render)
    return fmt


def _check(fmt: TurnFormat, render: Render) -> None:
    system = {"role": "system", "content": "You answer briefly."}
    talks = [
        [{"role": "user", "content": "Hello there"}],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}],
    ]
    for talk in talks:
        for messages in (talk, [system, *talk]):
            if messages[0]["role"] == "system" and fmt.system is None and fmt.system_separator is None:
                continue
            implied = ([{"role": "system", "content": fmt.default_system}] if fmt.default_system is not None
                       and messages[0]["role"] != "system" else [])
            if fmt.render([*implied, *messages], True) != render(messages, True):
                raise ModelError("Ollama export: the chat template does more than wrap each turn (its output for a "
                                 "short conversation cannot be rebuilt turn by turn), so no Modelfile template can be "
                                 "derived from it; use the gguf format with llama.cpp, which reads the Jinja template")


def jinja_render(template: str, *, bos_token: str | None, eos_token: str | None) -> Render:
    """``render(messages, add_generation_prompt)`` for a Jinja chat template, as transformers renders it."""
    from transformers.utils.chat_template_utils import render_jinja_template

    def render(messages: Sequence[dict[str, str]], generation_prompt: bool) -> str:
        rendered, _ = render_jinja_template([list(messages)], chat_template=template,
                                            add_generation_prompt=generation_prompt,
                                            bos_token=bos_token or "", eos_token=eos_token or "")
        return rendered[0]

    return render


def modelfile(gguf_name: str, template: str, *, bos_token: str | None, eos_token: str | None, add_bos: bool) -> str:
    """The Modelfile text for ``gguf_name`` (beside it in the same folder) and a Jinja chat ``template``."""
    fmt = turn_format(jinja_render(template, bos_token=bos_token, eos_token=eos_token))
    if add_bos and bos_token and fmt.preamble.startswith(bos_token):
        fmt.preamble = fmt.preamble[len(bos_token):]
    lines = [f"FROM ./{gguf_name}", "", f'TEMPLATE """{fmt.go_template()}"""', ""]
    if fmt.default_system is not None:
        if '"""' in fmt.default_system:
            raise ModelError('Ollama export: the default system prompt contains """, which a Modelfile cannot hold')
        lines += [f'SYSTEM """{fmt.default_system}"""', ""]
    lines += [f"PARAMETER stop {json.dumps(word, ensure_ascii=False)}" for word in fmt.stop_words()]
    return "\n".join(lines) + "\n"
