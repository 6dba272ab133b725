"""Lesson 05's knowledge checks: the answer key lives here, not in the notebook.

The questions of the notebook's old quiz cells came over verbatim; some distractors were then written out in full
(so the right option is not the longest every time) and new questions added for the seeds' and syllabus's
concepts that had none."""

from course_lib.quiz import Choice, Numeric, Question

QUIZZES = {
    "05.1": Question(
        'A chat-completions service puts the same 1,500-token system prompt in front of every conversation. GPU '
        'memory runs high and time to first token spikes when traffic peaks. Which change helps most, and why?',
        [
            Choice("Prefix caching on a paged KV cache: the system prompt's blocks are computed once and shared by "
                   "reference, so each request's prefill and memory shrink to its own tokens",
                   True,
                   'Yes: section 4 measured less prefill work and fewer blocks held, with the same tokens out.'),
            Choice('A larger batch size: with more requests in each step, the shared system prompt is computed once '
                   'for the whole batch instead of once per request, which saves both prefill time and memory',
                   False,
                   "A batch computes every request's prompt; without sharing, the prefix is still computed per "
                   'request.'),
            Choice('Reserving the maximum length for every request up front',
                   False,
                   "That is lesson 02's Orca (Max): more memory per request, not less."),
            Choice("Caching the system prompt's text in the tokenizer",
                   False,
                   "Tokenising is cheap; what costs is computing and storing the prefix's keys and values."),
        ]),
    "05.2": Question(
        'A service combines prefix caching with a paged KV cache. Prompts share a 40-token system prompt and the '
        "block size is 16. How many of a new request's prompt tokens can be taken from the cache?",
        [
            Choice("32: the prefix's two full blocks; the partial third block (8 shared tokens) is computed again",
                   True,
                   'Yes: only full blocks are cached, because a partial block will still be written.'),
            Choice('40: every shared token',
                   False,
                   'Blocks are the unit of caching; the last 8 shared tokens sit in a partial block.'),
            Choice('48: three blocks, rounded up',
                   False,
                   "The third block would hold the request's own tokens too: not shared."),
            Choice('0: prefix caching reuses a prompt only when the whole prompt, not just its start, is identical to'
                   ' an earlier one',
                   False,
                   'The chained hash finds the shared full blocks of the start of the prompt, whatever follows.'),
        ]),
    "05.3": Question(
        'Under GPU memory pressure, with shared-prefix traffic from many tenants, which KV-cache strategy keeps the '
        'most requests running?',
        [
            Choice('Paged blocks with reference-counted sharing of prefix blocks, keeping unused cached blocks only '
                   'until memory is needed (least recently used first)',
                   True,
                   'Yes: shared prefixes are held once, and the cache never takes memory a running request needs '
                   '(section 6).'),
            Choice('Keep every cached prefix forever, so that hit rates stay high',
                   False,
                   'Then cached blocks would crowd out running requests: memory pressure would turn into refusals.'),
            Choice('Give each tenant a contiguous region sized for its longest request',
                   False,
                   "That brings back lesson 02's reservation and fragmentation, and shares nothing."),
            Choice('Trust the block hash alone to find shared blocks, to save the comparison',
                   False,
                   "A collision would hand one request another's keys and values: a hit is verified against the "
                   'tokens.'),
        ]),
    "05.4": Question(
        "At the same width (2, 4 or 6), why does beam search save a much larger share of KV blocks than parallel "
        "sampling (vLLM's Figure 15, and section 5's table)?",
        [
            Choice("Beams are forked from each other at every step, so they share nearly their whole history; "
                   "independent samples share only the prompt, and each sample's own tokens fill blocks of its own",
                   True,
                   "Yes: the longer the answers run next to the prompt, the less parallel samples share; beams keep "
                   "sharing what they wrote together."),
            Choice("Beam search generates fewer tokens, so it needs fewer blocks",
                   False,
                   "The saving is a share (held / named): fewer tokens would shrink both counts alike."),
            Choice("Beam search runs at temperature 0, so all its beams are the same sequence and one copy serves "
                   "every beam",
                   False,
                   "The beams differ (section 5's four hypotheses do, in their last words); they share the blocks "
                   "of their common history only."),
            Choice("Parallel sampling copies the whole prompt into every sample's blocks at the fork",
                   False,
                   "fork copies the block table, not the blocks; only the partly filled last block is copied, on "
                   "write."),
        ]),
    "05.cow": Numeric(
        "A prompt of {prompt_len} tokens sits in blocks of {block_size} tokens. The request asks for n = {n} samples: "
        "after the prefill it forks, and each sample then writes its first token's keys and values. How many blocks "
        "are copied on write in that step?",
        unit="blocks",
        explain="{prompt_len} tokens fill {full} full blocks and leave a partial block of {partial} tokens; every sample "
                "writes its first token into that shared partial block. Each writer that still shares it gets a copy; "
                "the last one is then its only holder and writes in place: {n} - 1 = {expected}. (With no partial "
                "block, every sample's first token would open a new block: no copy at all.)",
        tolerance=0.0),
}
