"""Lesson 02's knowledge checks: the answer key lives here, not in the notebook.

The questions of the notebook's old quiz cells came over verbatim; some distractors were then written out in full
(so the right option is not the longest every time) and new questions added for the seeds' and syllabus's
concepts that had none."""

from course_lib.quiz import Choice, Numeric, Question

QUIZZES = {
    "02.1": Question(
        'An inference server processes thousands of generation requests of different lengths and allocates the keys '
        'and values of each sequence as a single contiguous block. After a while, allocations for new requests fail, '
        'although monitoring shows a significant total amount of free memory. What is the most likely reason?',
        [
            Choice('Finished requests left holes of many sizes; the free memory is scattered in pieces, none large '
                   "enough for a new request's contiguous block (external fragmentation)",
                   True,
                   'Yes: section 4 reproduced it. Total free exceeds the request, the largest hole does not.'),
            Choice('The monitoring tool is wrong: memory it reports as free has in fact already been handed out by '
                   'the allocator, so the server is really full and only more GPU memory would help',
                   False,
                   'The memory really is free; it is just not in one piece, and a contiguous allocation needs one '
                   'piece.'),
            Choice("The model's weights grow as it serves more requests",
                   False,
                   'Weights are fixed; what grows and shrinks is the KV cache of the running requests.'),
            Choice('Each block holds padding for the longest sequence in the batch',
                   False,
                   "That is lesson 01's padding; it uses memory up, but it does not explain failures with memory "
                   'free.'),
        ]),
    "02.2": Question(
        "A serving system runs many concurrent requests of varying lengths and frees each one's memory when it "
        'completes. Over time its throughput drops and it often fails to start new long sequences, while a '
        'significant percentage of memory shows as free. What is the most accurate evaluation?',
        [
            Choice('Fragmentation: free memory is split into non-contiguous holes, so long sequences cannot get the '
                   'contiguous region they need, fewer requests run at once, and throughput drops',
                   True,
                   'Yes: fewer requests fit at once (the mean batch in section 6), so each step does less useful '
                   'work.'),
            Choice('A memory leak: completed requests never give their memory back to the allocator, so the pool '
                   'shrinks with every finished request until long sequences no longer fit anywhere in it',
                   False,
                   'Leaked memory would show as used, not free; here the memory is free but unusable.'),
            Choice("The long sequences exceed the model's context length",
                   False,
                   'Then they would fail on an empty server too; these fail only after the arena has fragmented.'),
            Choice('The GPU has become compute-bound',
                   False,
                   'Compute limits slow every step down; they do not make allocations fail while memory is free.'),
        ]),
    "02.3": Question(
        'Two sequences of different lengths are batched; the shorter one is padded with <pad> tokens. A picture of '
        'memory shows their data blocks at non-contiguous places with gaps of unused memory between them. What is the'
        ' main operational challenge this shows?',
        [
            Choice("The gaps are free memory that may be too small for the next sequence's block: memory is wasted "
                   'while free, on top of the slots spent on padding',
                   True,
                   'Yes: padding wastes slots inside the batch, fragmentation wastes the memory between blocks.'),
            Choice('Non-contiguous blocks make the attention results wrong',
                   False,
                   "Section 3 ran TinyLM on slabs in the middle of the arena and got the reference store's logits."),
            Choice('The <pad> tokens are written into the gaps',
                   False,
                   "Padding lives inside a sequence's own block; the gaps belong to nobody."),
            Choice('Nothing: the next request always reuses a gap',
                   False,
                   'Only if it fits. A request larger than every gap waits, however much gap there is in total.'),
        ]),
    "02.4": Question(
        "Orca (Oracle) knows every request's final length and reserves exactly that, yet in section 6 well under half"
        ' of its memory holds token states. Where does the rest go?',
        [
            Choice("Each slab is held for the request's whole life, so slots for tokens not generated yet sit idle "
                   '(reservation), and holes and allocator rounding go unused (external fragmentation & others)',
                   True,
                   'Yes: even perfect knowledge of the lengths leaves both, because the region must be contiguous and'
                   ' claimed up front.'),
            Choice('Oracle over-reserves like Max does',
                   False,
                   "Oracle's internal fragmentation is zero: it reserves exactly."),
            Choice("The model's weights share the arena",
                   False,
                   'The arena holds only keys and values.'),
            Choice('Token states are stored twice, once for keys and once for values',
                   False,
                   'Both are counted in the bytes per token; that doubles the size of a token state, not the waste.'),
        ]),
    "02.5": Question(
        'A contiguous KV store refuses a request and its error reports requested=40 slots, largest_free=24, '
        'total_free=48. What does this tell you, and what would help?',
        [
            Choice('External fragmentation: enough memory is free in total (48 >= 40) but not in one piece (24 < 40);'
                   ' compacting the arena or paged blocks would let the request run',
                   True,
                   "Yes: section 4's refusal had exactly this shape. Compare the request with the largest hole, not "
                   'with the total: that is the diagnosis.'),
            Choice('The server is simply out of memory: the total free (48) is barely above the request (40), so the '
                   'next request to finish will fix it by itself within a few steps of the engine',
                   False,
                   'The total already exceeds the request; what is missing is a hole of 40. A finished request helps '
                   'only if the span it frees joins another hole.'),
            Choice('The request is too long for the model and should be rejected with an error',
                   False,
                   '40 slots is far below the context length (512); on an empty arena it would fit at once.'),
            Choice("The allocator's counters are wrong, since 48 free slots must always hold a 40-slot request; "
                   'restarting the store fixes it',
                   False,
                   'The counters are right: 48 free slots in two holes of 24 cannot hold 40 contiguous slots. A '
                   'restart only empties the arena for a while.'),
        ]),
    "02.kv_bytes": Numeric(
        'TinyLM has {layers} layers and {kv_heads} key/value heads of {head_dim} dimensions each, and the course '
        'keeps its KV cache in float32 (4 bytes a number). How many bytes of KV cache does one token take?',
        unit='bytes',
        explain='2 (a key and a value) x {layers} layers x {kv_heads} KV heads x {head_dim} dimensions x 4 bytes = '
                '{expected} bytes; the sizing table of section 2 says the same.',
        tolerance=0.0),
}
