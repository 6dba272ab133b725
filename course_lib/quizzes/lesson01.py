"""Lesson 01's knowledge checks: the answer key lives here, not in the notebook."""

from course_lib.quiz import Choice, Question

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
                   'Not with a correct attention mask and position ids: section 4 showed identical outputs.'),
            Choice('Nothing: padding tokens are free because they are masked',
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
            Choice('Because attention masks only work with left padding',
                   False,
                   'Masks work on either side (see section 4).'),
            Choice('Because position ids must start at the padding',
                   False,
                   'The opposite: position ids must skip the padding, so real tokens start at 0.'),
        ]),
}
