import pytest

from course_lib.padding import pad_batch, pad_tokens
from course_lib.tokenizer import EOS, PAD, SOS, VOCAB_SIZE, decode, encode, render


def test_round_trip_utf8():
    text = "Paged attention: ça marche, 東京 ✓"
    ids = encode(text, sos=True, eos=True)
    assert ids[0] == SOS and ids[-1] == EOS and len(ids) == len(text.encode()) + 2
    assert decode(ids) == text


def test_specials_are_distinct_and_in_vocab():
    assert len({PAD, SOS, EOS}) == 3 and max(PAD, SOS, EOS) == VOCAB_SIZE - 1


def test_seed_picture_is_reproducible_from_ids():
    """The seeds' picture: <pad> <pad> <pad> <SOS> I really like, beside the longer row."""
    rows = [["<SOS>", "I", "really", "like"], ["<SOS>", "I", "think", "this", "movie", "is", "better"]]
    padded = pad_tokens(rows, side="left")
    assert " ".join(padded[0]) == "<pad> <pad> <pad> <SOS> I really like"
    # the same from token ids (byte level): render groups bytes back into words
    batch = pad_batch([encode("I really like"), encode("I think this movie is better")], side="left")
    shown = render(batch.input_ids[0].tolist())
    assert shown[-4:] == ["<SOS>", "I", "really", "like"] and set(shown[:-4]) == {"<pad>"}


def test_render_per_byte_and_bad_ids():
    assert render(encode("a b", sos=False), words=False) == ["a", "␣", "b"]
    with pytest.raises(ValueError, match=r"ids\[0\]: must be an integer in \[0, 258\]; got 300"):
        decode([300])
    with pytest.raises(TypeError, match=r"ids\[1\]"):
        decode([65, 66.7])                   # a float id is an error, never truncated
    with pytest.raises(ValueError, match="text"):
        encode(123)
