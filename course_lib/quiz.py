"""Knowledge checks: multiple choice with feedback that explains every option.

    quiz("Why pad on the left for generation?", [
        Choice("So the newest token of every row is in the last column", True, "Yes: ..."),
        Choice("Because left padding uses less memory", False, "No: both pad the same number of slots."),
    ])

The widget shows the options, a "Check" button and feedback. Nothing about the
learner's answer is stored in the notebook, so it is deterministic under nbval.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Sequence

import ipywidgets as W
from IPython.display import display

from course_lib.validate import check_bool, check_int, check_sequence, check_type


@dataclass(frozen=True)
class Choice:
    text: str
    correct: bool
    why: str  # shown after the learner checks this option: why it is right or wrong

    def __post_init__(self):
        check_type("text", self.text, str)
        check_bool("correct", self.correct)
        check_type("why", self.why, str)


class Quiz:
    def __init__(self, question: str, choices: Sequence[Choice]):
        check_type("question", question, str)
        choices = check_sequence("choices", choices, 2, what="a list of Choice(text, correct, why)")
        for i, c in enumerate(choices):
            check_type(f"choices[{i}]", c, Choice, "a Choice(text, correct, why)")
        if sum(c.correct for c in choices) != 1:
            raise ValueError(f"choices: exactly one must be correct; got {sum(c.correct for c in choices)}")
        self.question, self.choices = question, list(choices)
        self.radio = W.RadioButtons(options=[(f"{chr(65 + i)}. {c.text}", i) for i, c in enumerate(choices)],
                                    value=None, layout=W.Layout(width="auto"))
        self.button = W.Button(description="Check", button_style="primary")
        self.feedback = W.HTML()
        self.button.on_click(lambda _b: self._on_check())
        self.box = W.VBox([W.HTML(f"<b>{html.escape(question)}</b>"), self.radio, self.button, self.feedback])

    def answer(self, index: int) -> str:
        """Feedback for choice `index` (0-based), as plain text."""
        check_int("index", index, 0, len(self.choices) - 1)
        c = self.choices[index]
        return f"{'Correct' if c.correct else 'Not quite'}: {c.why}"

    def _on_check(self) -> None:
        if self.radio.value is None:
            self.feedback.value = "<i>Pick an option first.</i>"
            return
        ok = self.choices[self.radio.value].correct
        color = "#2e7d32" if ok else "#c62828"
        self.feedback.value = f'<span style="color:{color}">{html.escape(self.answer(self.radio.value))}</span>'

    def show(self) -> None:
        display(self.box)


def quiz(question: str, choices: Sequence[Choice]) -> None:
    """Build and display a knowledge check (returns nothing, so nothing extra is printed)."""
    Quiz(question, choices).show()
