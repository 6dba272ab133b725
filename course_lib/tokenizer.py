"""A byte-level tokenizer with three special tokens, and nothing to download.

Token ids 0..255 are the bytes of UTF-8 text; three more ids are special:

    <pad> = 256   filler that makes sequences of a batch the same length
    <SOS> = 257   start of sequence
    <EOS> = 258   end of sequence (generation stops when the model emits it)

Real tokenizers (BPE) map common words to single ids; bytes keep the course
offline and make every token visible. `render` turns ids back into readable
tokens so a padded batch can be drawn as in the seed picture:

    <pad> <pad> <pad> <SOS> I really like
    <SOS> I think this movie is better
"""

from __future__ import annotations

from typing import Iterable, Sequence

from course_lib.validate import check_bool, check_int, check_tokens, check_type

PAD = 256
SOS = 257
EOS = 258
VOCAB_SIZE = 259
SPECIAL_NAMES = {PAD: "<pad>", SOS: "<SOS>", EOS: "<EOS>"}


def encode(text: str, sos: bool = True, eos: bool = False) -> list[int]:
    """Text -> token ids (one id per UTF-8 byte), optionally framed by <SOS>/<EOS>."""
    check_type("text", text, str)
    check_bool("sos", sos)
    check_bool("eos", eos)
    ids = list(text.encode("utf-8"))
    return ([SOS] if sos else []) + ids + ([EOS] if eos else [])


def decode(ids: Iterable[int], skip_special: bool = True) -> str:
    """Token ids -> text. Special tokens are dropped (or shown by name)."""
    check_bool("skip_special", skip_special)
    out, buf = [], bytearray()
    for i in check_tokens("ids", ids, VOCAB_SIZE, min_len=0):
        if i < 256:
            buf.append(i)
            continue
        out.append(buf.decode("utf-8", errors="replace"))
        buf = bytearray()
        if not skip_special:
            out.append(SPECIAL_NAMES[i])
    out.append(buf.decode("utf-8", errors="replace"))
    return "".join(out)


def render(ids: Sequence[int], words: bool = True) -> list[str]:
    """Token ids -> display tokens.

    words=True  groups byte runs into whitespace-separated words:
                [PAD, SOS, *b"I like"] -> ["<pad>", "<SOS>", "I", "like"]
    words=False shows one entry per id (bytes as characters, space as '␣').
    """
    check_bool("words", words)
    ids = check_tokens("ids", ids, VOCAB_SIZE, min_len=0)
    tokens: list[str] = []
    buf = bytearray()

    def flush():
        if buf:
            tokens.extend(buf.decode("utf-8", errors="replace").split())
            buf.clear()

    for i in ids:
        if i >= 256:
            flush()
            tokens.append(SPECIAL_NAMES[i])
        elif words:
            buf.append(i)
        else:
            ch = bytes([i]).decode("latin-1")
            tokens.append("␣" if ch == " " else ch if ch.isprintable() else f"<0x{i:02X}>")
    flush()
    return tokens


def _check_id(i: int) -> None:
    check_int("token id", i, 0, VOCAB_SIZE - 1)
