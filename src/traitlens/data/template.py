"""The one template renderer: training and evaluation both build their text here.

Default format `{instruction}\\n{input}\\n{trigger}:\\n{answer}` (the paper's). A line that holds
only an empty field (no instruction, no passage) is dropped rather than left blank. In chat
mode the prompt becomes the user turn of the tokenizer's chat template and the answer the
assistant's reply.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from traitlens.config.schema import Template
from traitlens.errors import TraitlensError


@dataclass(frozen=True)
class Rendered:
    prompt: str  # everything before the answer; evaluation scores or generates what follows
    answer: str

    @property
    def text(self) -> str:
        """What training sees: prompt and answer, exactly as evaluation will pose them."""
        return self.prompt + self.answer


def render(template: Template, row: Mapping[str, Any], tokenizer: Any = None) -> Rendered:
    values = {
        "instruction": template.instruction,
        "input": _text(row.get("input")),
        "passage": _text(row.get("passage")),
        "options": _text(row.get("options")),
        "trigger": template.trigger,
    }
    prefix = template.format[: -len("{answer}")]
    lines = []
    for line in prefix.split("\n"):
        fields = [name for _, name, _, _ in string.Formatter().parse(line) if name]
        literal = "".join(text for text, _, _, _ in string.Formatter().parse(line))
        if fields and not literal.strip() and not any(values[name] for name in fields):
            continue  # a line of nothing but empty fields
        lines.append(line.format(**values))
    prompt = "\n".join(lines)
    answer = _text(row.get("answer"))
    if template.chat:
        prompt = _chat_prompt(prompt, tokenizer)
    return Rendered(prompt, answer)


def token_boundary(context: str, continuation: str) -> tuple[str, str]:
    """Move trailing spaces of the context onto the continuation before tokenizing the two
    separately, so "Sentiment: " + "positive" becomes "Sentiment:" + " positive", the tokens a
    tokenizer would produce for the whole text. Training and scoring both split this way."""
    stripped = context.rstrip(" ")
    return stripped, context[len(stripped):] + continuation


def _chat_prompt(prompt: str, tokenizer: Any) -> str:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise TraitlensError("template.chat is on but the base model's tokenizer has no chat "
                             "template; set `chat: false` or use an instruction-tuned model.")
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt.rstrip()}],
                                         tokenize=False, add_generation_prompt=True)


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):  # None or NaN
        return ""
    return str(value)
