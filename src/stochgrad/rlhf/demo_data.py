"""The offline demo task: a generated corpus of short reviews with mixed sentiment, and prompts to continue.

Nothing is downloaded. :func:`generate_corpus` writes sentences from a small grammar whose adjectives, verbs and
negations carry sentiment that VADER scores (about as many negative sentences as positive ones, plus neutral
ones), so a model pretrained on it continues a prompt such as ``"the movie was"`` positively or negatively at
about equal rates. Fine-tuning towards positive sentiment then has room to move the reward from about 0 towards 1.
"""

from __future__ import annotations

import random

NOUNS = ("movie", "film", "food", "hotel", "service", "book", "song", "concert", "weather", "trip", "game",
         "show", "class", "coffee", "city", "room", "staff", "music", "ending", "story", "party", "beach",
         "garden", "dinner")
POSITIVE = ("good", "great", "wonderful", "amazing", "excellent", "lovely", "beautiful", "fun", "nice", "perfect",
            "brilliant", "delightful", "pleasant", "fantastic", "charming")
NEGATIVE = ("bad", "terrible", "awful", "boring", "horrible", "ugly", "poor", "sad", "disappointing", "dull",
            "painful", "annoying", "dreadful", "weak", "bland")
NEUTRAL = ("long", "short", "new", "old", "big", "small", "loud", "quiet", "cold", "warm", "simple", "late",
           "early", "busy", "expensive")
INTENSIFIERS = ("very", "really", "quite", "so", "extremely", "pretty")
POSITIVE_VERBS = ("loved", "liked", "enjoyed", "adored")
NEGATIVE_VERBS = ("hated", "disliked", "regretted", "hated")
FEELINGS_POS = ("happy", "glad", "grateful", "excited")
FEELINGS_NEG = ("angry", "upset", "bored", "tired")

#: Sentence beginnings the demo fine-tunes on and evaluates on (disjoint lists; each ends before the words
#: that carry sentiment).
TRAIN_PROMPTS: tuple[str, ...] = tuple(
    [f"the {n} was" for n in NOUNS[:16]]
    + [f"i think the {n} is" for n in NOUNS[16:24]]
    + [f"honestly , the {n} felt" for n in NOUNS[2:10]]
    + [f"we {v} the" for v in ("saw", "tried", "visited", "watched")]
    + ["i", "we", "my day was", "the staff were", "after the trip i felt", "overall , the", "the",
       "the music and the"])
EVAL_PROMPTS: tuple[str, ...] = tuple(
    [f"the {n} was" for n in NOUNS[16:24]]
    + [f"i think the {n} is" for n in NOUNS[:4]]
    + ["honestly , the party felt", "honestly , the dinner felt", "after the concert i felt", "my trip was"])


def _adjective(rng: random.Random, mood: str) -> str:
    return rng.choice({"pos": POSITIVE, "neg": NEGATIVE, "neu": NEUTRAL}[mood])


def _phrase(rng: random.Random, mood: str) -> str:
    """An adjective phrase of the given mood, sometimes intensified, sometimes a negated opposite."""
    if mood != "neu" and rng.random() < 0.12:
        return "not " + _adjective(rng, "neg" if mood == "pos" else "pos")
    adj = _adjective(rng, mood)
    return f"{rng.choice(INTENSIFIERS)} {adj}" if rng.random() < 0.3 else adj


def sentence(rng: random.Random) -> str:
    """One sentence of the grammar: lower case, space-separated tokens, ending with ``.``."""
    mood = rng.choices(("pos", "neg", "neu"), weights=(0.4, 0.4, 0.2))[0]
    other = rng.choice(("pos", "neg", "neu"))
    n, n2 = rng.sample(NOUNS, 2)
    template = rng.randrange(10)
    if template == 0:
        return f"the {n} was {_phrase(rng, mood)} ."
    if template == 1:
        return f"the {n} was {_phrase(rng, mood)} and the {n2} was {_phrase(rng, mood)} ."
    if template == 2:
        return f"the {n} was {_phrase(rng, other)} but the {n2} was {_phrase(rng, mood)} ."
    if template == 3:
        verbs = POSITIVE_VERBS if mood == "pos" else NEGATIVE_VERBS if mood == "neg" else ("saw", "tried", "visited")
        return f"{rng.choice(('i', 'we'))} {rng.choice(verbs)} the {n} ."
    if template == 4:
        return f"i think the {n} is {_phrase(rng, mood)} ."
    if template == 5:
        return f"honestly , the {n} felt {_phrase(rng, mood)} ."
    if template == 6:
        verb = rng.choice(("saw", "tried", "visited", "watched"))
        return f"we {verb} the {n} , it was {_phrase(rng, mood)} ."
    if template == 7:
        feel = rng.choice(FEELINGS_POS if mood == "pos" else FEELINGS_NEG if mood == "neg" else ("calm", "quiet"))
        return f"after the {n} i felt {feel} ."
    if template == 8:
        return f"my day was {_phrase(rng, mood)} ."
    return f"overall , the {n} was {_phrase(rng, mood)} and the staff were {_phrase(rng, mood)} ."


def generate_corpus(n_sentences: int = 20000, seed: int = 0) -> list[str]:
    """``n_sentences`` sentences of the demo grammar, reproducible from ``seed``."""
    rng = random.Random(seed)
    return [sentence(rng) for _ in range(n_sentences)]
