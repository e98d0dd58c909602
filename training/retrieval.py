"""`lceval data retrieval`: seeded synthetic retrieval data, the training data of lceval-mini.

Three kinds of sample, each a fact buried in filler and asked for at the end, in the surface forms of the needle,
passkey and topic tasks and in others (other needles, questions, descriptions and fillers, and distractor facts of
the same shape), so that a model learns to retrieve rather than to recite:
- needle: a chat turn (description, filler holding "The SUBJECT is VALUE." and distractors, a question on the
  subject); the answer restates the needle sentence.
- key: completion style, no chat template (as the passkey task): a numbered key under a name, asked for by name.
- topic: LongChat's record of conversations on invented topics (the topic task's own prompt and conversation
  generator); the answer is the first topic.
- copy: a run of words, then the same run again as the completion: the second run can only be predicted by looking
  back (it teaches a small model to copy).
Half the needle subjects and values and half the key names are runs of words of any kind (`Writer.word`), so that
finding and copying, not knowing the word lists, is what answers them.
Word lists and shapes are in training/data/retrieval.yaml. Every sample is checked against the evaluation data
(`forbidden_strings`): no needle, question or key fact of the needle presets, no passkey filler sentence and no topic
of the topic task's pool ever appears, so a model that answers them has read them in the prompt.

Sizes are in characters (the tokenizer may not exist yet: lceval-mini's is trained on this data); a recipe's
`data.max_length` drops what turns out too long in tokens.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterator
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from lceval.api.errors import UserError
from lceval.api.settings import Count, Fraction, NonNegativeFloat, NonNegativeInt, Seed, settings_class

KINDS = ("needle", "key", "topic", "copy")
# Raised whenever the generator's code draws other records for the same settings (its word lists are hashed apart):
# a cached model whose tokenizer was trained on generated records is keyed by it (training.data.mix_digest).
GENERATOR_VERSION = 4
Fillers = Literal["any", "story", "short", "haystack", "lookalike"]
FILLER_STYLES = get_args(Fillers)[1:4]  # what "any" draws from, at random (a look-alike filler is asked for by name)
_SLOT = re.compile(r"\{(\w+)\}")


@settings_class
class RetrievalSpec:
    """What `lceval data retrieval` and a data-mix `generate: retrieval` source make (a field's type: its range)."""

    samples: Count = 1000
    min_chars: Count = 200  # each sample's filler is drawn between these sizes, in characters
    max_chars: Count = 1000
    needle: NonNegativeFloat = 0.45  # the kinds' shares (normalised)
    key: NonNegativeFloat = 0.3
    topic: NonNegativeFloat = 0.25
    copy: NonNegativeFloat = 0.0  # a run of words said twice (loss on the second: a copy)
    distractors: NonNegativeInt = 2  # at most this many other facts of the needle's shape in a needle sample
    # Share of needles and keys set at the very start or the very end of the filler (the needle tasks' depths 0 and
    # 100), half each; the others stand at a uniform place, which in a long filler reaches an end once in a hundred.
    edges: Fraction = 0.0
    # The fillers of needles and keys: "any" draws story, short or haystack at random (each a third); a name picks one;
    # "short" repeats 3 to 6 short sentences over and over (the passkey task's kind of filler, in other words);
    # "lookalike" repeats sentences about names that differ from the asked one in a few letters ("The bass key is
    # red." around "the pass key"), so that only the whole name, not its pieces, tells the answer from the filler.
    fillers: Fillers = "any"
    seed: Seed = 0


@cache
def _vocabulary_text() -> str:
    return resources.files("lceval.training").joinpath("data/retrieval.yaml").read_text(encoding="utf-8")


@cache
def vocabulary() -> dict[str, Any]:
    return yaml.safe_load(_vocabulary_text())


def generator_identity() -> str:
    """What the records of given settings are made by: the generator's version and its word lists' sha256."""
    return f"retrieval/v{GENERATOR_VERSION}/{hashlib.sha256(_vocabulary_text().encode()).hexdigest()}"


@cache
def forbidden_strings() -> tuple[str, ...]:
    """Evaluation text that training data must never hold: the needle presets' needles, questions and key facts,
    the passkey filler's sentences, and the topic task's topics (as listed and lower-cased)."""
    from lceval.tasks.haystack import NOISE_UNIT
    from lceval.tasks.needle import presets
    from lceval.tasks.topic import lower_first, topic_data

    found: set[str] = set()
    for preset in presets().values():
        for key in ("needle", "question"):
            text = str(preset.get(key) or "").strip()
            if text:
                found.add(text.split("{key}")[0].strip() if "{key}" in text else text)
        found.update(str(f) for f in preset.get("facts") or [] if "{key}" not in str(f))
    found.update(sentence.strip() + "." for sentence in NOISE_UNIT.split(".") if sentence.strip())
    for topic in topic_data()["topics"]:
        found.update((topic, lower_first(topic)))
    return tuple(sorted(s for s in found if s))


@cache
def _forbidden_lowered() -> tuple[tuple[str, str], ...]:
    return tuple((s, s.lower()) for s in forbidden_strings())


def leaks(text: str) -> list[str]:
    """The evaluation strings that `text` holds (case-insensitively)."""
    lowered = text.lower()
    return [s for s, low in _forbidden_lowered() if low in lowered]


class Writer:
    """Fills the shapes of retrieval.yaml with one seeded random stream."""

    def __init__(self, rng: random.Random, fillers: str = "any"):
        self.rng = rng
        self.vocab = vocabulary()
        self.fillers = fillers

    def name(self) -> str:
        syllables = self.vocab["syllables"]
        word = "".join(self.rng.choice(syllables) for _ in range(self.rng.randint(2, 3)))
        return word.capitalize()

    def word(self, numbers: bool = True) -> str:
        """One word of a run: from the word lists, an invented name, random letters (a third of them capitalised), a
        listed word grown by letters or (where `numbers`) a number."""
        draw = self.rng.random() * (1.0 if numbers else 0.85)
        if draw < 0.3:
            return self.rng.choice(copy_pool())
        if draw < 0.45:
            return self.name()
        if draw < 0.65:  # a third capitalised: an evaluation's names (San Francisco) split into such pieces
            letters = self.letters(2, 9)
            return letters.capitalize() if self.rng.random() < 1 / 3 else letters
        if draw < 0.85:
            return self.grown_word()
        return str(self.rng.randint(0, 10 ** self.rng.randint(1, 6)))

    def letters(self, low: int, high: int) -> str:
        return "".join(self.rng.choice(LETTERS) for _ in range(self.rng.randint(low, high)))

    def grown_word(self) -> str:
        """A listed word with a suffix or random letters before or after it: copying it means going on past a piece
        where a known word could end ("eat" in "eating", "ham" in "hamburg")."""
        word = self.rng.choice(copy_pool())
        draw = self.rng.random()
        if draw < 0.4:
            word += self.rng.choice(SUFFIXES)
        elif draw < 0.8:
            word += self.letters(1, 5)
        else:
            word = self.letters(1, 4) + word
        return word.capitalize() if self.rng.random() < 1 / 3 else word

    def words(self, low: int, high: int, numbers: bool = True) -> str:
        """A run of `low` to `high` words of `word`."""
        return " ".join(self.word(numbers) for _ in range(self.rng.randint(low, high)))

    def fill(self, pattern: str, **given: str) -> str:
        def slot(match: re.Match) -> str:
            key = match.group(1)
            if key in given:
                return given[key]
            if key == "name":
                return self.name()
            if key == "number":
                return str(self.rng.randint(2, 99))
            return str(self.rng.choice(self.vocab[key]))

        return _SLOT.sub(slot, pattern)

    def fact(self) -> tuple[str, str, str]:
        """(subject, needle sentence, its verb) of one fact."""
        # Half the subjects follow a shape, half are words of any kind around a preposition: with a few dozen shapes
        # only, a model learns to match their words, not to find whatever the question names.
        if self.rng.random() < 0.5:
            subject = self.fill(self.rng.choice(self.vocab["subjects"]))
        else:
            subject = self.words(1, 3, numbers=False)
            subject += f" {self.rng.choice(('of', 'in', 'for', 'to'))} " + self.words(1, 3, numbers=False)
        # Half the values follow a shape, half are runs of unrelated words: a value that the shapes predict can be
        # guessed, so only the second kind makes copying it from the needle the one way to get it right.
        if self.rng.random() < 0.5:
            value = self.fill(self.rng.choice(self.vocab["values"]))
        else:
            value = self.words(2, 10)
        copula = self.rng.choice(self.vocab["copulas"])
        return subject, f"The {subject} {copula} {value}.", copula

    def lookalike(self, name: str) -> str:
        """`name` with one or two of its words misspelt (`misspelt`: "pass key" -> "bass key", "pass kfy"); a word of
        one or two letters or of digits is kept, and a name of such words only gains a letter."""
        words = name.split(" ")
        changeable = [i for i, word in enumerate(words) if len(word) > 2 and word.isalpha()]
        if not changeable:
            return name + self.rng.choice(LETTERS)
        for i in sorted(self.rng.sample(changeable, self.rng.randint(1, min(2, len(changeable))))):
            words[i] = self.misspelt(words[i])
        return " ".join(words)

    def misspelt(self, word: str) -> str:
        """`word` with one or two letters from a random place on replaced by others (its capital kept), never the
        same word."""
        while True:
            at = self.rng.randrange(len(word) - 1)
            letters = self.letters(1, 2)
            new = word[:at] + letters + word[at + len(letters):]
            new = new[0].upper() + new[1:] if word[0].isupper() else new
            if new.lower() != word.lower():
                return new

    def filler(self, n_chars: int, name: str) -> list[str]:
        """Whole sentences, at least n_chars characters in all: stories, repeated short sentences, lceval's
        generated haystack English under a seed of this stream (never the task's default seed 0), or repeated
        sentences about look-alikes of `name` (the name asked for) among short ones; the style is drawn at random
        unless the writer's `fillers` names one."""
        style = self.rng.choice(FILLER_STYLES) if self.fillers == "any" else self.fillers
        sentences: list[str] = []
        size = 0
        if style == "haystack":
            from lceval.tasks.haystack import generated_paragraphs

            paragraphs = generated_paragraphs(seed=self.rng.randint(1000, 10**6))
            while size < n_chars:
                paragraph = next(paragraphs)
                sentences += [s.strip() for s in re.findall(r"[^.!?]+[.!?]", paragraph)]
                size += len(paragraph) + 2  # as tasks.haystack.generated_text counts a paragraph and its break
            return sentences
        unit = None
        if style == "short":
            unit = self.rng.sample(self.vocab["short_sentences"], self.rng.randint(3, 6))
        elif style == "lookalike":
            unit = [f"The {self.lookalike(name)} is {self.rng.choice(copy_pool())}."
                    for _ in range(self.rng.randint(2, 4))]
            unit += self.rng.sample(self.vocab["short_sentences"], self.rng.randint(1, 2))
            self.rng.shuffle(unit)
        while size < n_chars:
            if unit:
                sentence = unit[len(sentences) % len(unit)]
            else:
                sentence = self.fill(self.rng.choice(self.vocab["story_patterns"]))
                sentence = sentence[0].upper() + sentence[1:]
            sentences.append(sentence)
            size += len(sentence) + 1
        return sentences

    def bury(self, sentences: list[str], inserts: list[str], edges: float = 0.0) -> str:
        """The filler with each insert placed between two sentences at a random depth, set off by a space, a line
        break or a blank line (the tasks' needles stand on lines of their own). With probability `edges` the first
        insert (the one asked for) goes last, at the very start or the very end."""
        out = list(sentences)
        at_edge = bool(edges) and self.rng.random() < edges
        for insert in inserts[1:] if at_edge else inserts:
            out.insert(self.rng.randint(0, len(out)), self.rng.choice(SEPARATORS).join(("", insert, "")))
        if at_edge:
            out.insert(self.rng.choice((0, len(out))), self.rng.choice(SEPARATORS).join(("", inserts[0], "")))
        return " ".join(out).replace(" \n", "\n").replace("\n ", "\n").strip(" ")


def needle_sample(w: Writer, n_chars: int, distractors: int, edges: float = 0.0) -> dict[str, Any]:
    subject, needle, copula = w.fact()
    others = [w.fact()[1] for _ in range(w.rng.randint(0, distractors))]
    others = [o for o in others if subject not in o]
    body = w.bury(w.filler(n_chars, subject), [needle, *others], edges)
    question = w.fill(w.rng.choice(w.vocab["questions"]), subject=subject, copula=copula)
    description = w.rng.choice(w.vocab["descriptions"])
    messages = [{"role": "user", "content": f"{description}{body}{question}"},
                {"role": "assistant", "content": needle}]
    system = w.rng.choice(w.vocab["systems"])
    if system:
        messages.insert(0, {"role": "system", "content": system})
    return {"conversations": messages, "task": "needle"}


def key_sample(w: Writer, n_chars: int, edges: float = 0.0) -> dict[str, Any]:
    # Half the keys go by a listed name, half by a name of any words: a model that has seen a few names only
    # learns those names (it lost an unseen name such as the passkey task's as its training went on).
    names = w.rng.sample(w.vocab["key_names"], 2)
    for i in range(2):
        if w.rng.random() < 0.5:
            names[i] = w.words(1, 3, numbers=False)
    while names[1] == names[0]:
        names[1] = w.rng.choice(w.vocab["key_names"])
    keys = [str(w.rng.randint(10 ** (d - 1), 10**d - 1)) for d in (w.rng.randint(4, 7), w.rng.randint(4, 7))]
    line = w.rng.choice(w.vocab["key_lines"])
    inserts = [line.format(key_name=names[0], key=keys[0]).strip()]
    if w.rng.random() < 0.3:  # a second key under another name: the question names the one to give
        inserts.append(line.format(key_name=names[1], key=keys[1]).strip())
    body = w.bury(w.filler(n_chars, names[0]), inserts, edges)
    description = w.rng.choice(w.vocab["descriptions"])
    question = w.rng.choice(w.vocab["key_questions"]).format(key_name=names[0])
    return {"prompt": f"{description}{body}{question}", "completion": f" {keys[0]}.", "task": "key"}


def topic_sample(w: Writer, n_chars: int) -> dict[str, Any]:
    from lceval.tasks.topic import generated_conversation, record_prompt

    conversations: list[str] = []
    topics: list[str] = []
    size = 0
    while not conversations or size < n_chars:
        # Half the topics follow a shape, half are runs of words of any kind: with shapes only, a model learns to
        # begin every answer the shapes' way ("Caring for a ...") instead of copying the first topic.
        if w.rng.random() < 0.5:
            topic = w.fill(w.rng.choice(w.vocab["topics"]))
        else:
            topic = w.words(2, 6, numbers=False)
            topic = topic[0].upper() + topic[1:]
        if topic in topics:
            continue
        text = generated_conversation(topic, w.rng.randint(0, 10**6), 0, w.rng.randint(0, 2))
        topics.append(topic)
        conversations.append(text)
        size += len(text)
    messages = [{"role": "user", "content": record_prompt(conversations)},
                {"role": "assistant", "content": topics[0]}]
    return {"conversations": messages, "task": "topic"}


def copy_sample(w: Writer, n_chars: int) -> dict[str, Any]:
    """A run of words said once as the prompt and again as the completion: each word of the copy follows the word
    it followed in the prompt, so only looking back predicts it. The words are drawn from the word lists, invented
    names, random letter strings and numbers (`Writer.word`), so that copying is learnt for every piece of the
    vocabulary, not for a few hundred known words (an evaluation's needle is words never seen together)."""
    words: list[str] = []
    size = 0
    while size < max(24, n_chars // 2):
        words.append(w.word())
        size += len(words[-1]) + 1
    run = " ".join(words)
    return {"prompt": f"{run}.", "completion": f" {run}.", "task": "copy"}


COPY_WORDS = ("noun", "object", "thing", "place", "role", "animal", "food", "colour", "item", "gerund", "gerund2",
              "verb", "superlative", "weather", "daytime")


@cache
def copy_pool() -> tuple[str, ...]:
    return tuple(sorted({word for key in COPY_WORDS for word in vocabulary()[key]}))


LETTERS = "abcdefghijklmnopqrstuvwxyz"
SUFFIXES = ("ing", "s", "ed", "er", "y", "es", "ers", "ly", "ness", "ful", "ish", "land", "ton", "ville")
SEPARATORS = ("", "\n", "\n\n")


def _text(record: dict[str, Any]) -> str:
    if "conversations" in record:
        return "\n".join(m["content"] for m in record["conversations"])
    return record["prompt"] + record["completion"]


def generate(spec: RetrievalSpec) -> Iterator[dict[str, Any]]:
    """`spec.samples` records, the same for the same spec on every machine; a draw that would hold evaluation
    text (see `leaks`) is drawn again."""
    if spec.min_chars > spec.max_chars:
        raise UserError(f"min_chars {spec.min_chars} is above max_chars {spec.max_chars}; swap them.")
    weights = [spec.needle, spec.key, spec.topic, spec.copy]
    if sum(weights) <= 0:
        raise UserError("the shares of needle, key, topic and copy samples are all 0; give at least one a share.")
    rng = random.Random(f"retrieval/{spec.seed}")
    writer = Writer(rng, spec.fillers)
    made = 0
    while made < spec.samples:
        kind = rng.choices(KINDS, weights)[0]
        n_chars = rng.randint(spec.min_chars, spec.max_chars)
        if kind == "needle":
            record = needle_sample(writer, n_chars, spec.distractors, spec.edges)
        elif kind == "key":
            record = key_sample(writer, n_chars, spec.edges)
        elif kind == "topic":
            record = topic_sample(writer, n_chars)
        else:
            record = copy_sample(writer, n_chars)
        if leaks(_text(record)):
            continue
        made += 1
        yield record


def write(spec: RetrievalSpec, out: Path, progress=None) -> int:
    """The records as JSON lines in `out` (written whole to a temporary file, then renamed); their count."""
    staging = out.with_name(f".{out.name}.partial")
    task = progress.add_task("generating", total=spec.samples) if progress else None
    with staging.open("w", encoding="utf-8") as handle:
        for record in generate(spec):
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            if progress:
                progress.advance(task)
    staging.replace(out)
    return spec.samples
