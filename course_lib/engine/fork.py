"""Many continuations of one prompt on shared KV blocks: parallel sampling and beam search.

Both start the same way: the request prefills its prompt ONCE. What happens at its
first token differs.

Parallel sampling, `Request(n=4)` (vLLM: `SamplingParams(n=4)`)
    The request goes on as sample 0 and forks n - 1 more samples. A sample's block
    table is a copy of the request's (`store.fork`), so the prompt's blocks are held
    once; the first time a sample writes into a block someone else also holds (the
    prompt's partly filled last block) it gets its own copy (copy-on-write). From then
    on each sample is an ordinary request: scheduled, preempted and finished on its
    own, drawing with its own generator seeded `seed + i`, so sample i equals
    `Request(seed=seed + i)` served alone. A store that cannot fork (the contiguous
    slab) makes every sample compute the prompt again: the cost sharing removes.

Beam search, `Request(beam_width=W)`
    Keeps the W most likely continuations ("beams") by their summed log-probability.
    Every step, each live beam proposes every next token and the best (beam, token)
    pairs win. Each winner becomes a NEW sequence forked from its beam: a beam that
    wins twice is continued twice (its history's blocks held once, the shared last
    block copied on write), a beam that wins nothing is freed. A winner that ends on
    <EOS> (among the W best) is a finished hypothesis, kept if it is among the W best
    finished so far; the next best non-EOS pairs keep W beams alive. Finished
    hypotheses are ranked by log-probability PER TOKEN (without that, "The end." right
    away beats every real story: each token only lowers a sum). The search stops when
    W hypotheses have finished and no live beam, at its per-token score now, would
    rank among them (or at max_new_tokens, where every beam finishes); the request's
    output is the best hypothesis, and `request.beams` lists them all, best first.
    (Close to Hugging Face transformers' default beam search: length_penalty=1.0,
    early_stopping=False, lengths counted in generated tokens.) The request itself only prefills and keeps the record;
    its beams are the engine's own sequences (negative ids).

    Beams step together: every live beam of a search computes its next token in the
    same step (the scheduler schedules all of them or none), and a preemption of any
    beam restarts the whole search from the prompt (it is deterministic, so it ends
    the same; vLLM's first engine also preempted a beam group as one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch

from course_lib.engine.request import Request

if TYPE_CHECKING:                    # the engine passes itself in; no import at run time
    from course_lib.engine.engine import Engine


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample `index` of a request seeded `seed` (sample 0 is the request itself)."""
    return seed + index


def fork_samples(engine: "Engine", req: Request, logits: torch.Tensor) -> list[tuple[Request, int]]:
    """Fork the n - 1 other samples of `req` right after its prefill, before its own first
    token is appended. logits (V,): its last prompt token's, from which every sample draws
    its first token with its own generator. Returns (sample, its first token) pairs (the
    tokens not yet appended nor checked for a stop: the engine does that for all of them)."""
    children = [req.fork(engine.new_rid(), seed=sample_seed(req.seed, i), parent_rid=req.rid, sample_index=i)
                for i in range(1, req.n)]
    for child in children:
        engine.scheduler.fork(req, child)                      # shares req's blocks (or waits to recompute)
    req.samples = children
    firsts = engine.sampler(children, logits.expand(len(children), -1))   # (n - 1,) tokens
    return list(zip(children, firsts))


def best_expansions(scores: Sequence[float], logprobs: torch.Tensor, k: int) -> list[tuple[int, int, float]]:
    """The k best (beam, token, score) over every live beam's every next token, where
    score = the beam's log-probability + log p(token | beam).

    scores:   one per live beam
    logprobs: (W, V) float64, log-softmax of each beam's last logits
    Ties go to the lower beam, then the lower token id (a stable sort), so the search
    is deterministic."""
    total = torch.tensor(list(scores), dtype=torch.float64)[:, None] + logprobs      # (W, V)
    flat = total.flatten()                                                            # (W * V,)
    order = torch.argsort(flat, descending=True, stable=True)[:k]                     # (k,)
    V = logprobs.shape[1]
    return [(int(i) // V, int(i) % V, float(flat[i])) for i in order]


def per_token(score: float, tokens: Sequence[int]) -> float:
    """How a finished hypothesis is ranked: its log-probability per generated token."""
    return score / len(tokens)


class BeamSearch:
    """One request's beam search while it runs.

    head:     the request (it prefilled the prompt; it keeps the record)
    beams:    the live beams, best first: the engine's own Requests, one sequence each
    scores:   their summed log-probabilities, in the same order
    finished: the best (at most W) finished hypotheses: (tokens, log-probability, reason)
    """

    def __init__(self, head: Request):
        self.head = head
        self.width = head.beam_width
        self.beams: list[Request] = []
        self.scores: list[float] = []
        self.finished: list[tuple[list[int], float, str]] = []

    def _keep(self, tokens: list[int], score: float, reason: str) -> None:
        """A finished hypothesis: keep the W best by per-token log-probability."""
        self.finished.append((tokens, score, reason))
        self.finished.sort(key=lambda h: -per_token(h[1], h[0]))         # stable: the earlier one first on ties
        del self.finished[self.width:]

    def done(self, length: int) -> bool:
        """W hypotheses have finished and the best live beam, at its per-token score now,
        would not rank among them."""
        if not self.beams:
            return True
        if len(self.finished) < self.width:
            return False
        worst = per_token(self.finished[-1][1], self.finished[-1][0])
        return self.scores[0] / length <= worst

    def step(self, engine: "Engine", rows: dict[int, torch.Tensor], token_time: float, step: int) -> None:
        """One step of the search. rows: {id(sequence): logits (V,)} of every live beam (or,
        at the first step, of the head). Picks the winners, forks them, frees the losers."""
        members = self.beams or [self.head]
        logprobs = torch.log_softmax(torch.stack([rows[id(m)] for m in members]).double().cpu(), -1)   # (W', V)
        length = len(members[0].output) + 1                           # every beam has the same length
        eos, W = self.head.eos_id, self.width
        winners, taken = [], 0                                          # taken: non-EOS pairs used (<= W)
        for rank, (src, tok, score) in enumerate(best_expansions(self.scores or [0.0], logprobs, 2 * W)):
            tokens = members[src].output + [tok]
            if tok == eos:
                if rank < W:                                            # an EOS among the W best
                    self._keep(tokens, score, "eos")
                continue
            if length >= self.head.max_new_tokens:                      # at the limit every beam ends
                self._keep(tokens, score, "length")
            else:
                winners.append((src, tok, score))
            taken += 1
            if taken == W:
                break
        children = []
        for src, tok, _ in winners:                                    # each winner: a new sequence
            child = members[src].fork(engine.new_rid(), search=self)
            child.output.append(tok)
            children.append((child, members[src]))
        self.beams = [child for child, _ in children]
        self.scores = [score for _, _, score in winners]
        finished = self.done(length)
        engine.scheduler.replace(members, [] if finished else children)   # fork the winners, free every old beam
        self.head.token_out(token_time, step)          # the search's request: a token out per step
        if finished:
            self.beams, self.scores = [], []
            self._end(engine, token_time, step)

    def _end(self, engine: "Engine", token_time: float, step: int) -> None:
        """The search is over: the best hypothesis is the request's output."""
        head = self.head
        best, _, reason = self.finished[0]
        head.output = list(best)
        head.beams = [(list(tokens), score) for tokens, score, _ in self.finished]
        del head.token_times[len(best):], head.token_steps[len(best):]   # the best one's tokens came out then
        head.search = None
        engine.scheduler.finish(head, reason)
        head.finish_time, head.finish_step = token_time, step


def beam_rows(sample_reqs: Sequence[Request], logits: torch.Tensor) -> dict[BeamSearch, dict[int, torch.Tensor]]:
    """The rows of this step's logits that belong to beam searches, by search. A head that
    just finished its prefill starts its search here."""
    out: dict[BeamSearch, dict[int, torch.Tensor]] = {}
    for i, r in enumerate(sample_reqs):
        if r.search is None and r.beam_width > 1 and not r.output:
            r.search = BeamSearch(r)
        if r.search is not None:
            out.setdefault(r.search, {})[id(r)] = logits[i]
    return out
