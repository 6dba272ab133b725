"""Lesson 00's storyteller: type an opening, watch TinyLM continue it token by token.

Each token appears as soon as the model has produced it, as a streaming server
sends it: one prefill of the opening, then one decode step per token, each
reading all earlier keys and values from the KV cache. The model decides when
to stop by emitting <EOS>; the panel says how many tokens that took.
"""

from __future__ import annotations

import html
import time

import ipywidgets as W
from IPython.display import display

from course_lib.generate import stream_greedy
from course_lib.tokenizer import EOS, decode, encode
from course_lib.widgets import check_int, error_html, info_html

DEFAULT_OPENING = "Once upon a time, there was a little frog named Sue. "


def check_opening(text, max_len: int) -> list[int]:
    """The opening's token ids (<SOS> + its bytes), or a ValueError naming `opening`."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("opening: type at least one character")
    ids = encode(text)
    if len(ids) > max_len - 1:
        raise ValueError(f"opening: must be at most {max_len - 2} bytes so the model has room to continue; "
                         f"got {len(ids) - 1}")
    return ids


def story_text_html(opening: str, continuation: str, done: bool) -> str:
    cursor = "" if done else '<span style="color:#888">▌</span>'
    return (f'<div style="font-family:Georgia,serif;font-size:15px;line-height:1.5;max-width:720px;white-space:pre-wrap;'
            f'overflow-wrap:anywhere">'
            f'<span style="color:#555">{html.escape(opening)}</span>'
            f'<span style="color:#1a237e;font-weight:600">{html.escape(continuation)}</span>{cursor}</div>')


class StoryPanel:
    """An opening box, a token budget, a button; the continuation streams below."""

    def __init__(self, model, opening: str = DEFAULT_OPENING, max_new_tokens: int = 400):
        self.model = model
        self.max_len = model.config.max_position_embeddings
        self.opening = W.Textarea(value=opening, description="opening", layout=W.Layout(width="100%", max_width="640px", height="60px"))
        self.budget = W.IntSlider(value=max_new_tokens, min=1, max=self.max_len - 2, description="max tokens")
        self.button = W.Button(description="Continue", button_style="primary")
        self.message = W.HTML()
        self.text = W.HTML()
        self.button.on_click(lambda _b: self.run())
        self.box = W.VBox([self.opening, W.HBox([self.budget, self.button], layout=W.Layout(flex_flow="row wrap")),
                           self.text, self.message], layout=W.Layout(width="100%", max_width="100%", overflow="hidden"))

    def run(self) -> str:
        """Stream a continuation into the panel; returns the text (for tests)."""
        self.text.value = ""
        try:
            prompt = check_opening(self.opening.value, self.max_len)
            room = self.max_len - len(prompt)
            budget = check_int(self.budget.value, "max tokens", 1, room)
        except ValueError as exc:
            self.message.value = error_html(str(exc))
            return ""
        self.message.value = ""
        tokens: list[int] = []
        start = time.perf_counter()
        for token in stream_greedy(self.model, prompt, budget):
            tokens.append(token)
            self.text.value = story_text_html(self.opening.value, decode(tokens), done=False)
        seconds = time.perf_counter() - start
        ended = bool(tokens) and tokens[-1] == EOS
        self.text.value = story_text_html(self.opening.value, decode(tokens), done=True)
        why = "the model emitted <EOS>" if ended else f"the budget of {budget} tokens ran out"
        self.message.value = info_html(f"{len(tokens)} tokens in {seconds:.2f} s; stopped because {why}.")
        return decode(tokens)

    def show(self) -> "StoryPanel":
        display(self.box)
        self.run()
        return self


def story_panel(model, opening: str = DEFAULT_OPENING, max_new_tokens: int = 400) -> StoryPanel:
    """The storyteller panel of lesson 00 (shown, with the default opening already continued)."""
    return StoryPanel(model, opening, max_new_tokens).show()
