"""Short stories from a small grammar: the text TinyLM is trained on.

Why stories? A serving lesson needs a model whose output a person can read and
check. A model trained on this grammar writes text like

    Once upon a time, there was a shy fox named Lily. Lily lived in a quiet
    village. One day, Lily found a kite near the river. Lily met a duck named
    Tom. Lily used the kite to fly it in the wind. Later, Tom the duck came
    back. At last, Lily went home happy. The end.

and the grammar makes the model REMEMBER what it read, which is exactly what
the KV cache is for:

    * the hero's name comes back in almost every sentence;
    * an object found early is used later, in a way that fits that object
      (a kite is flown, a key opens a door): the model must recall which one;
    * a friend met in the middle comes back later as "Tom the duck": name and
      animal must both be recalled;
    * no event happens twice, so the model must know which ones it has told.

Lengths vary widely (2 to 15 sentences, most stories short, a long tail), like
real chat outputs. Each story ends with "The end." and then <EOS>: a server
cannot know a request's length in advance, it learns it when the model stops.

Everything is seeded and pure Python: `story(seed)` is the same text on every
machine. Training uses seeds from `TRAIN_SEEDS`, held-out evaluation seeds
from `HELDOUT_SEEDS` (disjoint ranges), so the test measures stories the model
never saw.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

# ---- the vocabulary of the grammar --------------------------------------------------
NAMES = ("Lily", "Tom", "Sue", "Max", "Anna", "Ben", "Mia", "Sam", "Lucy", "Jack", "Emma", "Leo",
         "Zoe", "Finn", "Rosa", "Kai", "Nina", "Otto", "Ivy", "Hugo", "Ruby", "Eli", "Maya", "Jon")
ADJECTIVES = ("little", "brave", "shy", "kind", "happy", "tiny", "clever", "sleepy")
ANIMALS = ("frog", "cat", "dog", "fox", "bird", "bear", "duck", "mouse", "rabbit", "owl",
           "pig", "goat", "lion", "fish", "bee", "cow")
HOMES = ("in a quiet village", "near the forest", "by the sea", "on a big farm", "in a small house",
         "under an old tree", "near a river", "in the hills")
PLACES = ("river", "forest", "garden", "park", "beach", "barn", "hill", "pond", "road", "field")
# Each object has its own use: the model must recall WHICH object was found.
OBJECTS = {
    "ball": "play catch",
    "kite": "fly it in the wind",
    "key": "open an old door",
    "map": "find the way home",
    "lamp": "see in the dark",
    "boat": "cross the pond",
    "drum": "make loud music",
    "book": "read a long story",
    "hat": "stay warm",
    "rope": "climb a tall tree",
}
FEELINGS = ("happy", "sad", "scared", "proud", "tired", "excited", "calm", "surprised")
GAMES = ("tag", "hide and seek", "a silly game", "in the mud", "with a stick")
FOODS = ("an apple", "some bread", "a carrot", "some honey", "a big cake", "some soup")
SKIES = ("blue", "gray", "pink", "dark", "bright")
MOODS_HOME = ("happy", "tired", "proud", "calm")

MAX_SENTENCES = 15          # opening + home + up to 11 events + going home + "The end."
END_SENTENCE = "The end."

TRAIN_SEEDS = range(0, 10_000_000)               # training draws seeds from here
HELDOUT_SEEDS = range(1_000_000_000, 1_100_000_000)   # evaluation only: never trained on


@dataclass(frozen=True)
class Story:
    """One story: its sentences, its hero, and the facts later sentences refer back to."""

    seed: int
    sentences: tuple[str, ...]
    hero: str
    friend: str | None
    obj: str | None

    @property
    def text(self) -> str:
        return " ".join(self.sentences)

    def opening(self, sentences: int = 1) -> str:
        """The first `sentences` sentences followed by a space: a prompt to continue."""
        return " ".join(self.sentences[:sentences]) + " "


def _events_count(rng: random.Random) -> int:
    """How many middle events: geometric, so most stories are short with a long tail (0..11)."""
    n = 0
    while n < 11 and rng.random() < 0.72:
        n += 1
    return n


def allowed_events(used, found: bool, met: bool, since_friend: int) -> list[str]:
    """The events that may come next: each at most once, and only when the facts it needs exist
    (using or losing needs a found object, playing needs a friend, "came back" needs a friend met
    at least two events earlier, showing needs both)."""
    options = ["find", "meet", "feel", "sky", "eat", "go"]
    if found:
        options += ["use", "lose"] if met else ["use"]
    if met:
        options += ["play"] + (["back"] if since_friend >= 1 else [])
        if found:
            options.append("show")
    return [o for o in options if o not in used]


def story(seed: int) -> Story:
    """The story with this seed (deterministic, pure Python)."""
    rng = random.Random(seed)
    hero = rng.choice(NAMES)
    adjective, animal = rng.choice(ADJECTIVES), rng.choice(ANIMALS)
    sentences = [f"Once upon a time, there was a {adjective} {animal} named {hero}."]
    n_events = _events_count(rng)
    if n_events or rng.random() < 0.5:
        sentences.append(f"{hero} lived {rng.choice(HOMES)}.")

    friend = friend_animal = obj = None
    used: set[str] = set()
    since_friend = 0
    for _ in range(n_events):
        options = allowed_events(used, obj is not None, friend is not None, since_friend)
        if not options:
            break
        event = rng.choice(options)
        used.add(event)
        since_friend += 1
        if event == "find":
            obj = rng.choice(list(OBJECTS))
            sentences.append(f"One day, {hero} found a {obj} near the {rng.choice(PLACES)}.")
        elif event == "meet":
            friend = rng.choice([n for n in NAMES if n != hero])
            friend_animal = rng.choice(ANIMALS)
            since_friend = 0
            sentences.append(f"{hero} met a {friend_animal} named {friend}.")
        elif event == "feel":
            sentences.append(f"{hero} felt very {rng.choice(FEELINGS)}.")
        elif event == "sky":
            sentences.append(f"The sky was {rng.choice(SKIES)} that day.")
        elif event == "eat":
            sentences.append(f"{hero} ate {rng.choice(FOODS)}.")
        elif event == "go":
            sentences.append(f"{hero} walked to the {rng.choice(PLACES)}.")
        elif event == "use":
            sentences.append(f"{hero} used the {obj} to {OBJECTS[obj]}.")
        elif event == "lose":
            sentences.append(f"{hero} lost the {obj}, but {friend} helped find it.")
        elif event == "play":
            sentences.append(f"{hero} and {friend} played {rng.choice(GAMES)}.")
        elif event == "back":
            sentences.append(f"Later, {friend} the {friend_animal} came back.")
        elif event == "show":
            sentences.append(f"{hero} showed the {obj} to {friend}.")
    if len(sentences) > 1:
        sentences.append(f"At last, {hero} went home {rng.choice(MOODS_HOME)}.")
    sentences.append(END_SENTENCE)
    return Story(seed, tuple(sentences), hero, friend, obj)


def stories(seeds) -> list[Story]:
    """`story(s)` for every seed in `seeds` (any iterable of ints)."""
    return [story(int(s)) for s in seeds]


def heldout(n: int, offset: int = 0) -> list[Story]:
    """`n` held-out stories (seeds never used in training)."""
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 1_000_000:
        raise ValueError(f"n: must be an integer in [1, 1000000]; got {n!r}")
    start = HELDOUT_SEEDS.start + offset
    return stories(range(start, start + n))


_NAME_RE = re.compile(r"\b(" + "|".join(NAMES) + r")\b")


def hero_of(text: str) -> str | None:
    """The character a text is about: the name it mentions most (ties: the first seen).

    `hero_of(continuation) == story.hero` is the test that the model carried the
    hero's name from the opening through its own continuation.
    """
    names = _NAME_RE.findall(text)
    if not names:
        return None
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    return max(counts, key=lambda n: (counts[n], -names.index(n)))


def count_distinct_stories() -> int:
    """How many different stories the grammar can write, counted exactly.

    Every story is: the opening (name x adjective x animal), then either nothing
    or a home, 0 to 11 events (each used at most once, each allowed only when
    the facts it needs exist: "use" needs a found object, "back" needs a friend
    met at least two events earlier, ...), going home in one of its moods, and
    "The end.". Different choices give different texts (each sentence names its
    event and its choices), so counting choice sequences counts texts. The count
    walks the same rules as `story()`, memoised on (events used, object found,
    friend met, events since the friend).
    """
    from functools import lru_cache

    slot_choices = {"find": len(OBJECTS) * len(PLACES), "meet": (len(NAMES) - 1) * len(ANIMALS),
                    "feel": len(FEELINGS), "sky": len(SKIES), "eat": len(FOODS), "go": len(PLACES),
                    "use": 1, "lose": 1, "play": len(GAMES), "back": 1, "show": 1}

    @lru_cache(maxsize=None)
    def tails(used: frozenset, obj: bool, friend: bool, since_friend: int, left: int) -> int:
        """Event sequences from this state with at most `left` more events (the empty one included)."""
        total = 1
        if left == 0:
            return total
        for e in allowed_events(used, obj, friend, since_friend):
            nxt = 0 if e == "meet" else min(since_friend + 1, 2)
            total += slot_choices[e] * tails(used | {e}, obj or e == "find", friend or e == "meet", nxt, left - 1)
        return total

    openings = len(NAMES) * len(ADJECTIVES) * len(ANIMALS)
    with_events = tails(frozenset(), False, False, 0, 11) - 1        # at least one event (needs a home)
    endings = len(HOMES) * len(MOODS_HOME)
    return openings * (1 + endings + endings * with_events)
