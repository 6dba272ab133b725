"""Lesson 07's knowledge checks: the answer key lives here, not in the notebook.

The questions of the notebook's old quiz cells came over verbatim; some distractors were then written out in full
(so the right option is not the longest every time) and new questions added for the seeds' and syllabus's
concepts that had none."""

from course_lib.quiz import Choice, Question

QUIZZES = {
    "07.1": Question(
        "You are on call for an internal LLM chat service that gives each sequence's keys and values one contiguous "
        'block of memory. New requests fail to get memory although monitoring shows a significant share of the KV '
        'memory free. Which analysis is right?',
        [
            Choice("Finished requests left holes of many sizes; no single hole is as large as a new request's block, "
                   'although the holes add up to more (external fragmentation). Paged KV memory removes it',
                   True,
                   'Yes: incident A; at {paradox_refusals} of its {refusals} refusals the total free memory covered the '
                   'request and the largest free span did not.'),
            Choice('The monitoring is wrong: free memory can always be allocated',
                   False,
                   'The memory is free, just not in one piece; a contiguous allocation needs one piece.'),
            Choice('There is a memory leak: finished requests keep their KV memory after they end, so the pool slowly'
                   ' fills up; monitoring shows that memory as free only because no running request is attached to it',
                   False,
                   'Leaked memory would show as used, not free.'),
            Choice('The model weights grow with traffic',
                   False,
                   'Weights are fixed; the KV cache is what comes and goes.'),
        ]),
    "07.2": Question(
        'A chat-completions service puts the same long system prompt in front of every request. GPU memory sits at '
        '100 %, and latency spikes appear as answers get longer. Which change stabilises both, without more memory?',
        [
            Choice("Prefix caching on paged KV memory: the system prompt's blocks are stored once and shared by every"
                   ' request, so each request holds only its own tokens and far fewer requests must be preempted',
                   True,
                   'Yes: incident B. {recomputing_steps} of the {stall_steps} steps behind its stalls were computing a '
                   'preempted request again.'),
            Choice("Preempt by swapping instead of recomputing: a preempted request's keys and values move to CPU "
                   'memory and come back later, so nothing is computed twice and the spikes caused by recomputation '
                   'disappear',
                   False,
                   'A swapped request still stops streaming while it is out; the memory is still full of copies of '
                   'one prompt.'),
            Choice('A larger block size',
                   False,
                   "Larger blocks waste more of each request's last block; the copies remain."),
            Choice('Admit more requests at once',
                   False,
                   'More requests hold more copies of the prompt: more preemptions.'),
        ]),
    "07.3": Question(
        "Why does a server's KV memory keep growing during long generations even when no new request arrives, and "
        'what happens when it runs out?',
        [
            Choice("Every generated token adds its keys and values in every layer, so each request's cache grows by "
                   'one token per step; when no block is left, the scheduler preempts a request (freeing its KV to '
                   "recompute later, or swapping it out), and that request's stream stalls",
                   True,
                   "Yes: the growth is linear in the output length; incident B's telemetry shows the preemptions at "
                   'the peak.'),
            Choice("The prompt's keys and values are recomputed at every step",
                   False,
                   'That is generation without a KV cache (lesson 02); the cache exists to avoid it.'),
            Choice('Attention scores are cached too and grow quadratically',
                   False,
                   'Only keys and values are cached; scores are recomputed from them.'),
            Choice('The memory does not grow; only the monitoring lags',
                   False,
                   'The blue area of the dashboard is real token states.'),
        ]),
    "07.4": Question(
        "Which sentence belongs in the ROOT CAUSE section of incident C's post-incident report?",
        [
            Choice('Prefill-first batching with a 512-token step budget put each ~200-token document prompt into a '
                   'single step, and every stream running at that moment waited for that step',
                   True,
                   'Yes: a mechanism, backed by the stall list (long steps holding hundreds of prompt tokens).'),
            Choice('p99 time between tokens rose above the 40 ms objective',
                   False,
                   'That is the symptom.'),
            Choice("The 'summarise this document' feature launched",
                   False,
                   'That is the trigger: it changed the traffic.'),
            Choice('Switched to chunked prefill with a smaller budget',
                   False,
                   'That is the fix.'),
        ]),
    "07.5": Question(
        'A KV-memory dashboard shows the pool 60 % used at the moment a request is refused. Which telemetry tells you'
        ' whether the cause is fragmentation rather than a full pool?',
        [
            Choice('The largest free span at the refusal: if it is smaller than the request while the total free is '
                   'larger, the memory is free but scattered',
                   True,
                   "Yes: incident A's refusals are marked red exactly when the total free exceeded the request, with "
                   'the dotted largest-span line below it.'),
            Choice('The number of requests waiting in the queue, since a long queue means memory is full',
                   False,
                   'A long queue says requests are not admitted, not why: it grows for a full pool and a fragmented '
                   'one alike.'),
            Choice('The p99 time between tokens: fragmentation makes every decode step slower, and slow steps show up'
                   ' in the tail of the time between tokens well before allocations fail',
                   False,
                   'Fragmentation does not slow a step down; it blocks admissions. Latency is the wrong panel here.'),
            Choice('The share of memory holding token states: 60 % used proves that 40 % can be allocated',
                   False,
                   'That is the paradox itself: 40 % free in many small pieces cannot hold one large contiguous '
                   'request.'),
        ]),
}
