"""Lesson 03's knowledge checks: the answer key lives here, not in the notebook."""

from course_lib.quiz import Choice, Question

QUIZZES = {
    "03.1": Question(
        'A server is processing a batch of three long-running requests. After several steps, a new, short request '
        'arrives. How would a system with continuous batching most likely handle it in the next step?',
        [
            Choice('It adds the new request to the running batch at the next iteration, running its prefill alongside'
                   " (or instead of) the others' decodes, without waiting for the long requests to finish",
                   True,
                   'Yes: iteration-level scheduling re-forms the batch every step; section 2 showed it under four '
                   'policies.'),
            Choice('It queues the new request until all three long requests have finished',
                   False,
                   "That is static (request-level) batching: the newcomer's TTFT becomes the longest request's "
                   'remaining time.'),
            Choice('It preempts one of the long requests so the short one can run alone',
                   False,
                   'Preemption happens when KV memory runs out, not because a request arrives; there is a free slot '
                   'here.'),
            Choice('It starts a second, separate batch for the short request that runs after the current step',
                   False,
                   'There is one batch per step; continuous batching changes its membership instead of running '
                   'batches side by side.'),
        ]),
    "03.2": Question(
        'An inference system is designed to maximise hardware utilisation. Which description best captures the core '
        'principle of continuous batching, as opposed to static batching?',
        [
            Choice('The batch is re-formed at every model iteration: finished requests leave and waiting ones join '
                   'immediately, so slots do not sit idle until the longest request ends',
                   True,
                   'Yes: the unit of scheduling is one iteration (one token), not one whole request.'),
            Choice('Requests are grouped by similar length before the batch starts, to reduce padding',
                   False,
                   'That is bucketing (lesson 01): it still runs each batch to completion.'),
            Choice('The batch size is increased until GPU memory is full and then kept fixed',
                   False,
                   'A large fixed batch is still static: finished members keep their slots.'),
            Choice('Each request runs alone on its own GPU stream so none waits for another',
                   False,
                   'That gives up batching altogether; the weights would be read once per request per step.'),
        ]),
    "03.3": Question(
        "Your chat service's users complain that replies sometimes freeze mid-sentence whenever new users arrive, "
        'though first replies come quickly. Which change targets this best?',
        [
            Choice('Chunked prefill: cap the tokens per step and fill it with decodes first, then prompt chunks',
                   True,
                   'Yes: long prefills no longer stall running decodes (section 6), at a small cost in TTFT.'),
            Choice('Switch to prefill-only steps so new prompts are processed as early as possible',
                   False,
                   'That makes the freezes worse: every running request pauses during each prefill step.'),
            Choice('Use static batching',
                   False,
                   'Streams would be smooth, but newcomers would wait for whole batches to end.'),
            Choice('Pad every batch to the longest prompt',
                   False,
                   'Padding adds work; it does not change who waits.'),
        ]),
}
