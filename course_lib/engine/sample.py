"""The sampler: the last step of an iteration, logits to tokens."""

from __future__ import annotations

from typing import Sequence

import torch

from course_lib.engine.request import Request


def sample_token(logits: torch.Tensor, temperature: float, generator: torch.Generator) -> int:
    """One token drawn from softmax(logits / temperature), logits (V,), with `generator`
    (on the CPU in float64, so a seed draws the same token whatever the device)."""
    probs = torch.softmax(logits.double().cpu() / temperature, dim=-1)         # (V,)
    return int(torch.multinomial(probs, 1, generator=generator))


class Sampler:
    """Turns each finished row of logits into a token.

    Greedy (argmax) for temperature 0, the default. A request with
    temperature > 0 samples from softmax(logits / temperature) with its OWN
    generator seeded by `request.seed`: its tokens do not depend on which
    other requests share its steps, so every policy gives the same text.
    Replace it with any callable (requests, logits (S, V)) -> list[int].
    """

    def __init__(self):
        self._generators: dict[int, torch.Generator] = {}

    def __call__(self, requests: Sequence[Request], logits: torch.Tensor) -> list[int]:
        greedy = logits.argmax(-1).tolist()                                  # (S,)
        out = []
        for i, r in enumerate(requests):
            if r.temperature == 0:
                out.append(greedy[i])
                continue
            gen = self._generators.get(r.rid)
            if gen is None:
                gen = self._generators[r.rid] = torch.Generator().manual_seed(int(r.seed))
            out.append(sample_token(logits[i], r.temperature, gen))
        return out

    def hand_over(self, rid: int, to: "Sampler") -> None:
        """Move request `rid`'s random stream to another sampler (a request that moves to
        another engine goes on drawing the same random numbers). No stream yet: nothing moves."""
        gen = self._generators.pop(rid, None)
        if gen is not None:
            to.adopt(rid, gen)

    def adopt(self, rid: int, generator: torch.Generator) -> None:
        """Go on with request `rid`'s random stream, handed over by another sampler."""
        if rid in self._generators:
            raise ValueError(f"rid: request {rid!r} already has a random stream in this sampler")
        self._generators[rid] = generator
