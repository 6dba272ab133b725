"""Lesson 03's knowledge checks: the answer key lives here, not in the notebook.

The questions of the notebook's old quiz cells came over verbatim; some distractors were then written out in full
(so the right option is not the longest every time) and new questions added for the seeds' and syllabus's
concepts that had none."""

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
            Choice('It starts a second, separate batch for the short request, which the GPU runs in between the long '
                   "batch's steps, so the long batch is not disturbed and the newcomer still gets its first token "
                   'soon',
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
            Choice('Requests are grouped by similar length before each batch starts, so that there is little padding '
                   'and every request of a batch finishes at about the same time, freeing all of its slots together',
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
            Choice("Run every new prompt's prefill in a step of its own as soon as it arrives, so that new users get "
                   'their first token as early as possible',
                   False,
                   'That makes the freezes worse: every running request pauses during each prefill step.'),
            Choice('Use static batching',
                   False,
                   'Streams would be smooth, but newcomers would wait for whole batches to end.'),
            Choice('Pad every batch to the longest prompt',
                   False,
                   'Padding adds work; it does not change who waits.'),
        ]),
    "03.4": Question(
        'Continuous batching re-forms the batch before every model step. What does that cost, and when does the cost '
        'matter most?',
        [
            Choice('Each step re-runs the policy, reserves KV and rebuilds the input ids, positions and attention '
                   'metadata; it matters most when the model step itself is short, like a small decode step on a GPU',
                   True,
                   'Yes: section 8 timed both phases. On this CPU the model step dominates; on a GPU the same Python '
                   "work is a larger share, which is why engines overlap scheduling with the GPU's work and capture "
                   'CUDA graphs.'),
            Choice('Nothing: the batch is only a list of requests, and changing who is in it costs no time',
                   False,
                   "Someone must rebuild the step's inputs and metadata whenever the membership may have changed: "
                   'section 8 measured that cost per step.'),
            Choice("Every request's KV cache is copied into a new contiguous tensor whenever the batch changes",
                   False,
                   'Keys and values stay where they are in the KV store; only the small per-step metadata (positions,'
                   ' slot mapping) is rebuilt.'),
            Choice('The model weights are reloaded at each step so that they fit the new batch size',
                   False,
                   'Weights are loaded once; a step reads them for whatever batch it has, of any size.'),
        ]),
    "03.5": Question(
        'With a budget of 64 tokens per step, four requests are decoding when a 200-token prompt arrives. How does '
        'chunked prefill interleave them?',
        [
            Choice("Each step runs the four decodes (4 tokens) and fills the rest of the budget with the prompt's "
                   'next 60-token chunk, so the prompt takes 4 steps and no stream stalls',
                   True,
                   "Yes: decodes first, then prompt chunks up to the budget (section 6); vLLM's V1 scheduler does the"
                   ' same.'),
            Choice('The whole 200-token prompt runs in one step first and the four decodes continue afterwards, '
                   'because a prompt cannot be split across steps',
                   False,
                   "A prompt can be split: each chunk's keys and values stay in the KV cache and the next chunk "
                   'attends to them. Running it whole first is prefill-first scheduling.'),
            Choice('The decodes pause while the prompt runs in 64-token chunks, then resume together',
                   False,
                   'That still stalls every stream for four steps; chunked prefill keeps the decodes in every step.'),
            Choice('The new request waits until one of the four finishes, so the batch never changes mid-prompt',
                   False,
                   'That is request-level admission; continuous batching admits the prompt at the next step, in '
                   'chunks.'),
        ]),
}
