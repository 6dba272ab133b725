"""Lesson 01's knowledge checks: the answer key lives here, not in the notebook.

The questions of the notebook's old quiz cells came over verbatim; some distractors were then written out in full
(so the right option is not the longest every time) and new questions added for the seeds' and syllabus's
concepts that had none."""

from course_lib.quiz import Choice, Numeric, Question

QUIZZES = {
    "01.1": Question(
        "A model must process ['The','cat','sat'], ['A','quick','brown','fox'] and ['On','the','mat'] in one batch, "
        'padding the shorter ones at the end with <pad>. Which batch is correct?',
        [
            Choice('[The cat sat <pad>], [A quick brown fox], [On the mat <pad>]',
                   True,
                   'Every row now has the length of the longest (4), and the padding follows the real tokens.'),
            Choice('[<pad> The cat sat], [A quick brown fox], [<pad> On the mat]',
                   False,
                   'This is left padding; the question asks for padding at the end.'),
            Choice('[The cat sat], [A quick brown], [On the mat]',
                   False,
                   "Truncating 'fox' loses information; padding adds filler, it never removes tokens."),
            Choice('[The cat sat <pad> <pad>], [A quick brown fox <pad>], [On the mat <pad> <pad>]',
                   False,
                   'One <pad> too many everywhere: pad to the longest sequence (4), not beyond.'),
        ]),
    "01.2": Question(
        'A server batches requests of very different lengths into fixed-size batches. What is the main consequence?',
        [
            Choice('Every sequence is padded to the longest in its batch, so memory and compute are spent on <pad> '
                   'slots',
                   True,
                   'Yes: the batch is rectangular, and the waste grows with the spread of lengths (quadratically for '
                   'attention).'),
            Choice('The shorter sequences produce wrong outputs',
                   False,
                   'Not with a correct attention mask and position ids: section 4 showed the same outputs up to float'
                   ' rounding.'),
            Choice('Nothing that costs anything: the <pad> slots are masked out, so the hardware skips them and the '
                   'batch runs as fast as its real tokens alone would',
                   False,
                   'Masked slots are still stored and still computed; the mask only hides their results.'),
            Choice('The longest sequence is truncated to the average length',
                   False,
                   'Padding never truncates.'),
        ]),
    "01.3": Question(
        'Why do decoder-only models pad prompts on the left for batched generation?',
        [
            Choice('So the newest real token of every row sits in the last column, where the next token is predicted',
                   True,
                   'Then each step appends one column to the whole batch, and no row predicts from a <pad>.'),
            Choice('Because left padding needs fewer <pad> tokens',
                   False,
                   'Both sides add exactly the same number of pads.'),
            Choice('Because an attention mask can only hide positions at the start of a row, so right-padded rows '
                   'would attend to their own <pad> tokens',
                   False,
                   'Masks work on either side: in section 3 the right-padded row matched the prompt alone at its '
                   'newest real token.'),
            Choice('Because position ids must start at the padding',
                   False,
                   'The opposite: position ids must skip the padding, so real tokens start at 0.'),
        ]),
    "01.4": Question(
        'A server has 64 waiting requests: most are 8 to 24 tokens long, a few 96 to 160. It forms batches of 8, each'
        ' padded to its longest member. What does sorting the requests by length before forming the batches '
        '(bucketing) change?',
        [
            Choice('Most batches then hold only short sequences and pad to a short length, while the few long ones '
                   'pad each other, so far fewer <pad> slots are stored and computed',
                   True,
                   'Yes: section 7 counted several times less padding, and the forward pass over all the batches got '
                   'faster. The price in a server is waiting for similar requests to arrive.'),
            Choice('Nothing: each batch still pads to its longest member, so the total padding is the same whatever '
                   'order the requests are grouped in, and only the order of the outputs changes',
                   False,
                   'The total depends on who shares a batch: a 160-token request among 8-token ones makes seven rows '
                   'pad by about 150 slots; among other long ones it pads by little.'),
            Choice('It removes padding altogether, since every batch then holds sequences of exactly one length',
                   False,
                   'Only if lengths repeat exactly; sorted neighbours are similar, not equal, so a little padding '
                   'stays.'),
            Choice("It makes the short requests' outputs more accurate, because they no longer attend to long "
                   'neighbours',
                   False,
                   'With a correct mask and position ids a row never attended to its neighbours (section 4): '
                   'bucketing changes the cost, not the results.'),
        ]),
    "01.5": Question(
        'After batching prompts with left padding and passing the attention mask to a GPT-2-style model (learned, '
        'absolute position embeddings), a colleague finds that'
        " the short prompts now generate different tokens than they do alone, while the longest prompt's output is "
        'unchanged. What is the most likely bug?',
        [
            Choice("The position ids count the <pad> slots, so each short prompt's real tokens start above position 0"
                   ' and get the position embeddings of tokens later in the text',
                   True,
                   'Yes: each short prompt reads the embeddings of later positions. (TinyLM uses RoPE, where only '
                   "distances between tokens matter, which is why section 4's slot-position variant still matched up "
                   'to rounding; position ids taken from the mask are right for every model.)'),
            Choice('The longest prompt should have been padded too: every row of a batch needs at least one <pad> for'
                   ' the attention mask to take effect on the other rows',
                   False,
                   "A row without <pad> simply has an all-ones mask, which is right; the longest prompt's unchanged "
                   'output shows that the batch itself is built correctly.'),
            Choice('Left padding cannot work for generation; the prompts must be padded on the right, and then the '
                   'short prompts will match',
                   False,
                   'Left padding is what generation wants (the newest token in the last column); with right padding '
                   'the short rows would predict their next token from a <pad>.'),
            Choice("The <pad> id is not in the vocabulary, so the short rows' embeddings are garbage",
                   False,
                   'The pad id is a real vocabulary entry (256 for TinyLM), and masked slots never reach the real '
                   'tokens; the fault is in what the real tokens themselves see.'),
        ]),
    "01.pad_share": Numeric(
        "Four prompts of {lengths} tokens are padded to the longest in one batch. What percentage of the batch's "
        'token slots hold <pad>?',
        unit='%',
        explain='The batch has 4 rows of the longest length; the <pad> slots are the slots minus the real tokens: (4 '
                'x longest - sum of the lengths) / (4 x longest) = {expected} %.',
        tolerance=0.5),
}
