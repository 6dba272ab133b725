"""Lesson 04's knowledge checks: the answer key lives here, not in the notebook.

The questions of the notebook's old quiz cells came over verbatim; some distractors were then written out in full
(so the right option is not the longest every time) and new questions added for the seeds' and syllabus's
concepts that had none."""

from course_lib.quiz import Choice, Numeric, Question

QUIZZES = {
    "04.1": Question(
        'How does paged allocation of the KV cache differ from standard (contiguous) allocation?',
        [
            Choice('Each request gets fixed-size blocks one at a time, anywhere in the pool, found through its block '
                   "table; a contiguous scheme reserves one run of slots for the request's whole possible length up "
                   'front',
                   True,
                   'Yes: so memory is claimed only as tokens arrive, and any free block serves any request.'),
            Choice('Paging compresses the keys and values so that more fit',
                   False,
                   'Nothing is compressed: each token still takes the same bytes; they are just placed in blocks.'),
            Choice('Paging stores the KV cache on the CPU and copies it to the GPU when needed',
                   False,
                   'The blocks live in GPU memory; only preemption by swap moves them to the CPU, and back.'),
            Choice('Paging makes attention itself cheaper to compute',
                   False,
                   'The kernel does the same arithmetic (section 8 measured its time beside contiguous attention); '
                   'the gain is memory, hence batch size.'),
        ]),
    "04.2": Question(
        "An LLM server that allocates each request's KV cache contiguously fails to start long requests although "
        'monitoring shows a large share of memory free, and its throughput has dropped. Which change addresses the '
        'root cause, and why?',
        [
            Choice('Paged KV allocation: fixed-size blocks mapped by per-request block tables remove external '
                   'fragmentation, so the free memory is usable, and more requests fit at once',
                   True,
                   'Yes: section 5 measured both effects, the memory share and the batch size.'),
            Choice('Restarting the server every hour',
                   False,
                   'That empties the holes for a while; they come back as soon as requests of mixed lengths finish.'),
            Choice('Reserving the maximum context length for every request when it is admitted, so that no request '
                   'ever has to grow its region and no allocation can fail in the middle of a generation',
                   False,
                   'That is Orca (Max): no request ever needs to grow, but most of the reservation is never used.'),
            Choice('A smaller batch size',
                   False,
                   'That admits fewer requests; the holes stay as they are.'),
        ]),
    "04.3": Question(
        'Going from 16-token to 256-token blocks on the same trace, what happens?',
        [
            Choice("Internal fragmentation grows (up to 255 empty slots in each request's last block), so fewer "
                   'requests fit, while the kernel reads longer contiguous runs',
                   True,
                   'Yes: section 6 measured the memory side; how much the longer runs help the kernel depends on the '
                   'machine.'),
            Choice('External fragmentation appears: large blocks leave large holes between requests in the pool, and '
                   'a new request may find no hole big enough for all of its blocks',
                   False,
                   'Blocks are all the same size, so any free block still serves any request: no external '
                   'fragmentation.'),
            Choice('Nothing changes: paging wastes nothing whatever the block size',
                   False,
                   'The last block of each request is partly empty, on average about half a block.'),
            Choice("The model's outputs change",
                   False,
                   'Block size changes where keys and values sit, not their values.'),
        ]),
    "04.empty_slots": Numeric(
        'A {tokens}-token prompt is admitted to a paged pool with blocks of {block_size} slots. How many slots of its'
        ' last block are still empty?',
        unit='slots',
        explain='It needs ceil({tokens} / {block_size}) blocks; their slots minus its tokens leave {expected} empty '
                '(internal fragmentation: at most block size - 1 per request, and only in its last block).',
        tolerance=0.0),
}
