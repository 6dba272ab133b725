"""Lesson 06's knowledge checks: the answer key lives here, not in the notebook.

The questions of the notebook's old quiz cells came over verbatim; some distractors were then written out in full
(so the right option is not the longest every time) and new questions added for the seeds' and syllabus's
concepts that had none."""

from course_lib.quiz import Choice, Question

QUIZZES = {
    "06.1": Question(
        'An LLM service runs interactive chat and nightly batch summarisation on the same GPUs. During the day chat '
        'users complain that their first token is slow whenever batch jobs are running. Which scheduling change '
        'addresses this most directly?',
        [
            Choice('Give chat requests a higher priority: order the waiting queue by priority and let a waiting chat '
                   'request preempt a running batch request',
                   True,
                   'Yes: section 3 showed interactive requests overtaking the queue, and taking a running batch '
                   "request's slot."),
            Choice('Increase the token budget per step so that more batch work is done in each step and the batch '
                   'jobs finish sooner, leaving the GPUs to the chat users for the rest of the day',
                   False,
                   'Bigger steps make every decode step longer; the chat requests still wait behind batch requests in'
                   ' the queue.'),
            Choice('Switch to static batching so batches are formed once',
                   False,
                   'A newcomer would then wait for a whole batch to finish: the opposite of what chat needs.'),
            Choice('Serve strictly first come, first served',
                   False,
                   'That is what makes chat wait behind batch requests that happened to arrive first.'),
        ]),
    "06.2": Question(
        'After switching to strict priority scheduling, some low-priority batch requests never finish during busy '
        'hours, although the server is never idle. What is happening, and which custom policy fixes it?',
        [
            Choice('Starvation: there is always a higher-priority request waiting; ageing (priority grows with time '
                   'waited) lets every request eventually reach the front',
                   True,
                   'Yes: section 5. With ageing, a low-priority request waits about (priority gap) / rate, plus the '
                   'time until a slot frees up: {wait_rate_005:g} and {wait_rate_02:g} steps at rates 0.05 and 0.2 '
                   'there.'),
            Choice('The batch requests are too long for the KV cache and are rejected',
                   False,
                   "A rejected request ends with a reason; these just wait. Section 5's low-priority requests were "
                   'short.'),
            Choice('The high-priority requests preempt the batch requests and overwrite their KV blocks, so the batch'
                   " requests' keys and values are corrupted and they must start over, again and again",
                   False,
                   'Preemption frees or swaps KV; the request is recomputed with the same tokens (the tests check '
                   'it).'),
            Choice('Shortest job first would fix it',
                   False,
                   'SJF starves long requests in the same way; it needs ageing too.'),
        ]),
    "06.3": Question(
        'A service is split into a prefill engine and a decode engine on different GPUs, joined by a pipeline. Which '
        'statement is right?',
        [
            Choice("Decode steps no longer wait for long prompts, but each request's KV cache must be copied to the "
                   'decode engine, which adds its transfer time between the first and second token',
                   True,
                   "Yes: section 7; the transfer grows with the KV bytes per token and shrinks with the link's "
                   'bandwidth.'),
            Choice('The decode engine recomputes the prompt, so no KV cache needs to move',
                   False,
                   'Recomputing would repeat the whole prefill; the point is to move its result, the KV cache.'),
            Choice('It always beats the same number of co-located engines, whatever the link',
                   False,
                   'On a slow link the hand-over itself becomes the longest gap: see the what-if.'),
            Choice('It removes the need for a token budget on the prefill engine',
                   False,
                   'The prefill engine still batches prompts; its steps set the time to first token.'),
        ]),
    "06.4": Question(
        'Compared with decode-prioritised batching, what does prefill-prioritised continuous batching trade?',
        [
            Choice('Lower time to first token for newcomers, paid for by stalls of the running streams (a higher tail'
                   ' of the time between tokens)',
                   True,
                   'Yes: section 2, when the budget cannot hold a whole prompt beside every decode; chunked prefill '
                   'moves along the trade-off with its token budget.'),
            Choice('Higher throughput at no latency cost: prompts are processed in large batches, which use the '
                   'hardware better, and the running streams are never paused',
                   False,
                   'The stalls are the cost: see the gap plot.'),
            Choice('Less KV memory per request',
                   False,
                   'The policy changes when tokens are computed, not how much KV they need.'),
            Choice('Fewer tokens generated per request',
                   False,
                   'Every policy generates exactly the same tokens.'),
        ]),
}
