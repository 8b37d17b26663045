"""Story grammar with controlled attributes: sentiment, topic and tense.

Every sentence is rendered from a template, so the attributes that produced it are
known exactly; the workbench later looks for them inside the model (concept
directions) and steers them. Templates use three markers:

- ``{slot}``: a word or phrase drawn from the lexicon (entries may hold markers too);
- ``<positive/negative>``: the sentiment chooses one side;
- ``[present|past]``: the tense chooses one side.

Lexicon draws never depend on the sentiment (each sentiment entry is itself a
``<pos/neg>`` pair), so re-rendering with the same random state and the other
sentiment gives a sentence that differs only in sentiment (``sentiment_pair``).

Held-out splits are disjoint at sentence level: ``split_of`` hashes each sentence,
and a story for a split is built only from sentences that hash into that split.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

SENTIMENTS = ("positive", "negative")
TOPICS = ("animals", "food", "weather", "school", "travel")
TENSES = ("present", "past")
SPLITS = ("train", "validation", "test")

NAMES = {
    "she": "Anna Maya Lily Sara Emma Nora Zoe Ella Mia Ruby Chloe Grace Hannah Julia Lucy Amira Priya Mei "
    "Sofia Clara Iris Leah Rosa Nina Alice Olivia Ava Isla Freya Esther Fatima Yuki Aisha Elena Hazel "
    "Ivy June Kate Laura Molly Ines Lena Tara Vera Rita".split(),
    "he": "Tom Sam Ben Leo Max Noah Jack Omar Ravi Hugo Felix Oscar Theo Liam Ethan Adam Daniel Kai Luca "
    "Marco Pablo Jonas Ivan Kenji Amir Finn Owen Henry Peter David Arjun Malik Yusuf Elias Louis Milo "
    "Simon Victor Dylan Caleb Tariq Boris Emil Rafael Joe".split(),
}
PRONOUNS = {"she": ("she", "her", "her"), "he": ("he", "his", "him")}

GENERAL = {
    "relative": "mother father grandmother grandfather aunt uncle sister brother cousin neighbour "
    "teacher best friend".split(" "),
    "time": ["in the morning", "on Monday", "after lunch", "at noon", "in the evening", "on Saturday",
             "one afternoon", "before dinner", "at night", "on the weekend", "after school", "at dawn"],
    "feel": ["<happy/sad>", "<glad/upset>", "<cheerful/gloomy>", "<delighted/miserable>", "<calm/nervous>",
             "<proud/ashamed>", "<excited/worried>", "<pleased/angry>", "<joyful/lonely>", "<hopeful/afraid>",
             "<relaxed/tense>", "<grateful/annoyed>", "<thrilled/disappointed>", "<confident/anxious>",
             "<amused/grumpy>"],
    "eval": ["<wonderful/terrible>", "<lovely/awful>", "<great/horrible>", "<beautiful/ugly>",
             "<pleasant/unpleasant>", "<perfect/dreadful>", "<fantastic/disastrous>", "<marvellous/dreary>",
             "<charming/dismal>", "<splendid/nasty>", "<delightful/rotten>", "<brilliant/miserable>",
             "<amazing/boring>"],
    "adv": ["<happily/sadly>", "<cheerfully/angrily>", "<gladly/unhappily>", "<joyfully/gloomily>",
            "<eagerly/reluctantly>", "<proudly/nervously>", "<warmly/coldly>", "<calmly/anxiously>"],
    "react": ["<[smiles|smiled]/[frowns|frowned]>", "<[laughs|laughed]/[cries|cried]>",
              "<[cheers|cheered]/[sighs|sighed]>", "<[sings|sang]/[groans|groaned]>",
              "<[dances|danced]/[sulks|sulked]>", "<[grins|grinned]/[scowls|scowled]>",
              "<[claps|clapped]/[complains|complained]>", "<[beams|beamed]/[weeps|wept]>"],
    "fverb": ["<[loves|loved]/[hates|hated]>", "<[enjoys|enjoyed]/[dislikes|disliked]>",
              "<[adores|adored]/[detests|detested]>", "<[likes|liked]/[cannot stand|could not stand]>"],
    "outcome": ["everything [goes|went] <well/wrong>", "it [is|was] <the best/the worst> day of the week",
                "nothing [goes|went] <wrong/right>", "the day [ends|ended] <with a smile/in tears>",
                "<the fun never [stops|stopped]/the trouble never [stops|stopped]>"],
    "subject": "history;the moon;volcanoes;dinosaurs;the ocean;plants;rivers;the stars;ancient Rome;insects"
    .split(";"),
    "city": "Lisbon Oslo Rome Cairo Lima Tokyo Vienna Dublin Madrid Prague Nairobi Delhi Quito Seoul Athens "
    "Bergen Krakow Porto Kyoto Havana Sydney Montreal Marrakesh Edinburgh".split(),
    "petname": "Biscuit Pepper Luna Coco Daisy Shadow Rocky Bella Ginger Pickles Socks Mango".split(),
}

TOPIC_LEXICON = {
    "animals": {
        "thing": "dog cat rabbit horse duck goat parrot turtle kitten puppy pony hamster sheep cow owl fox "
        "squirrel frog goose donkey pig hedgehog deer mouse".split(),
        "place": "farm;barn;park;pond;field;zoo;garden;meadow;stable;forest;river bank;pet shop".split(";"),
        "act": ["[feeds|fed] the {thing}", "[brushes|brushed] the {thing}", "[plays|played] with the {thing}",
                "[walks|walked] the {thing} around the {place}", "[gives|gave] the {thing} some water",
                "[takes|took] a photo of the {thing}", "[builds|built] a little house for the {thing}",
                "[watches|watched] the {thing} sleep", "[reads|read] a book about the {thing}",
                "[chases|chased] the {thing} across the {place}", "[teaches|taught] the {thing} a new trick",
                "[visits|visited] the {thing} named {petname}"],
        "frames": ["The {thing} [is|was] <gentle and friendly/wild and unfriendly>.",
                   "{name}'s {thing} <[wags|wagged] its tail happily/[bites|bit] {his} hand angrily>.",
                   "The {thing} <[plays|played] gently/[growls|growled] loudly> near {name}.",
                   "<Taking care of/Cleaning up after> the {thing} [is|was] {name}'s "
                   "<favourite/least favourite> job."],
    },
    "food": {
        "thing": "soup bread cake pasta rice salad pie porridge curry pizza cheese lemonade tea stew honey "
        "jam toast chocolate pudding milk coffee butter fruit cereal".split(),
        "place": "kitchen;bakery;market;cafe;restaurant;dining room;picnic table;food stall;canteen;diner"
        .split(";"),
        "act": ["[bakes|baked] {thing} with {his} {relative}", "[cooks|cooked] {thing} for dinner",
                "[tastes|tasted] the {thing}", "[buys|bought] {thing} at the market",
                "[shares|shared] the {thing} with {friend}", "[eats|ate] {thing} for lunch",
                "[orders|ordered] {thing} at the {place}", "[makes|made] {thing} for the picnic",
                "[serves|served] {thing} to the guests", "[tries|tried] a new recipe for {thing}"],
        "frames": ["The {thing} [tastes|tasted] <delicious/disgusting>.",
                   "The {thing} [is|was] <sweet and fresh/sour and stale>.",
                   "{name} [eats|ate] the {thing} and [asks|asked] for <more/something else>.",
                   "The {thing} at the {place} [is|was] <the best/the worst> in town.",
                   "<Everyone [loves|loved]/Nobody [wants|wanted]> the {thing}."],
    },
    "weather": {
        "thing": "rain sunshine wind snow fog storm breeze thunder frost heat hail mist drizzle sleet "
        "weather".split(),
        "place": "porch;hill;beach;garden;balcony;street;harbour;field;lake;park;window seat".split(";"),
        "act": ["[watches|watched] the {thing} from the window", "[walks|walked] in the {thing}",
                "[checks|checked] the weather report", "[carries|carried] an umbrella to the {place}",
                "[puts|put] on a warm coat", "[waits|waited] for the {thing} to pass",
                "[looks|looked] up at the sky", "[sits|sat] on the {place} in the {thing}",
                "[draws|drew] a picture of the {thing}", "[runs|ran] through the {thing}"],
        "frames": ["The {thing} [is|was] <gentle and warm/cold and harsh>.",
                   "<The sun [shines|shone] brightly/Dark clouds [hang|hung]> over the {place}.",
                   "<It [is|was] the perfect weather for a walk/It [is|was] the worst weather for a walk>.",
                   "The {thing} <[makes|made]/[ruins|ruined]> the day at the {place}."],
    },
    "school": {
        "thing": "lesson;test;homework;essay;exam;book;project;poem;maths problem;spelling quiz;"
        "science project;history lesson;class;report".split(";"),
        "place": "classroom;library;school hall;playground;art room;music room;science lab;gym;"
        "school garden;computer room".split(";"),
        "act": ["[studies|studied] for the {thing}", "[reads|read] a book in the {place}",
                "[writes|wrote] an essay about {subject}", "[solves|solved] a maths problem",
                "[paints|painted] a picture in art class", "[sings|sang] in the school choir",
                "[asks|asked] the teacher a question", "[finishes|finished] the {thing} early",
                "[works|worked] on the {thing} with {friend}",
                "[presents|presented] the {thing} to the class",
                "[learns|learned] about {subject}"],
        "frames": ["{name} [gets|got] <a good mark/a bad mark> on the {thing}.",
                   "The teacher <[praises|praised]/[scolds|scolded]> {name} for the {thing}.",
                   "<{name} [understands|understood] every word/{name} [understands|understood] nothing> "
                   "in the {thing}.",
                   "<The class [cheers|cheered] for/The class [laughs|laughed] at> {name}."],
    },
    "travel": {
        "thing": "train;bus;ferry;plane;ticket;suitcase;map;journey;trip;hotel room;tram;taxi;boat"
        .split(";"),
        "place": "station;airport;harbour;museum;old town;beach;mountain village;island;market square;castle;"
        "bridge;hotel".split(";"),
        "act": ["[packs|packed] a suitcase", "[catches|caught] the train to {city}",
                "[buys|bought] a ticket to {city}", "[looks|looked] at the map",
                "[visits|visited] the {place}",
                "[sends|sent] a postcard from {city}", "[takes|took] the bus to the {place}",
                "[waits|waited] at the station", "[rides|rode] a bike along the river",
                "[explores|explored] the old town of {city}"],
        "frames": ["The {thing} [is|was] <on time and comfortable/late and crowded>.",
                   "<The view from the train [is|was] breathtaking/The seats on the train [are|were] dirty>.",
                   "{name} [finds|found] <a lovely hotel/a filthy hotel> in {city}.",
                   "The journey to {city} [is|was] <smooth/a nightmare>."],
    },
}

FRAMES = [  # sentiment-bearing frames shared by all topics
    "{name} [feels|felt] {feel} at the {place}.",
    "The {thing} [is|was] {eval}, and {name} [is|was] {feel}.",
    "{name} {act} and {react}.",
    "{name} {fverb} the {thing}.",
    "At the {place}, {name} {act} {adv}.",
    "{time}, {name} {act}, and {outcome}.",
    "{he} [thinks|thought] the {thing} [is|was] {eval}.",
    "It [is|was] a {eval} day at the {place}.",
    "{name} [goes|went] to the {place} with {friend} and [has|had] a {eval} time.",
    "{his} {relative} [says|said] that the {thing} [is|was] {eval}.",
    "Everyone at the {place} [is|was] {feel}.",
    "{name} {react} when {he} [sees|saw] the {thing}.",
    "The {place} [looks|looked] {eval} {time}.",
    '"This {thing} is {eval}!" {name} [says|said] {adv}.',
    "{name} {act}, and {he} [is|was] very {feel} about it.",
    "{name} [tells|told] {friend} about the {eval} {thing}.",
    "{name} [wants|wanted] to <stay at/leave> the {place} <all day/at once>.",
    "The {thing} [makes|made] {name} feel {feel}.",
    "{name} and {his} {relative} [spend|spent] a {eval} afternoon at the {place}.",
    "{friend} [asks|asked] {name} about the {thing}, and {he} [says|said] it [is|was] {eval}.",
    "<Luckily/Sadly>, the {thing} [is|was] {eval}.",
    "{name} {act} {adv}, and the {thing} [is|was] {eval}.",
    "{name} [writes|wrote] in {his} diary that the {place} [is|was] {eval}.",
    "{name} [does|did] not <stop smiling/stop complaining> all day.",
    "{time}, {name} [is|was] {feel} because the {thing} [is|was] {eval}.",
]
NEUTRAL_FRAMES = [
    "{name} {act}.", "{time}, {name} [goes|went] to the {place}.",
    "{name} [meets|met] {friend} at the {place}.",
    "{his} {relative} [is|was] at the {place} too.", "Then {name} {act}.",
    "After that, {he} [walks|walked] home with {friend}.",
]
OPENERS = [
    "[Today|One day], {name} [goes|went] to the {place}.",
    "{name} [lives|lived] near the {place} with {his} {relative}.",
    "{time}, {name} [wakes|woke] up early.", "[Now|Once upon a time], there [is|was] a child named {name}.",
    "{name} [has|had] a plan for the day.",
]
CLOSERS = [
    "In the end, {name} [is|was] {feel}.", "{name} [goes|went] home {feel}.",
    "It [is|was] a {eval} day for {name}.",
    "That night, {name} [dreams|dreamed] about the {eval} {thing}.",
    "{he} [will|would] <remember this day with a smile/rather forget this day>.",
]

_SLOT = re.compile(r"\{(\w+)\}")
_SENTIMENT = re.compile(r"<([^<>/]*)/([^<>/]*)>")
_TENSE = re.compile(r"\[([^\[\]|]*)\|([^\[\]|]*)\]")
_ARTICLE = re.compile(r"\b([Aa]) ([aeiouAEIOU])")


@dataclass(frozen=True)
class Attributes:
    """The controlled attributes of one sentence or story."""

    sentiment: str
    topic: str
    tense: str

    def as_dict(self) -> dict[str, str]:
        return {"sentiment": self.sentiment, "topic": self.topic, "tense": self.tense}


@dataclass(frozen=True)
class Character:
    """The protagonist, fixed across a story so pronouns agree."""

    name: str
    gender: str


def random_attributes(rng: random.Random) -> Attributes:
    return Attributes(rng.choice(SENTIMENTS), rng.choice(TOPICS), rng.choice(TENSES))


def random_character(rng: random.Random) -> Character:
    gender = rng.choice(("she", "he"))
    return Character(rng.choice(NAMES[gender]), gender)


def split_of(sentence: str) -> str:
    """Deterministic split of a sentence by hash: 80% train, 10% validation, 10% test."""
    bucket = int.from_bytes(hashlib.blake2b(sentence.encode(), digest_size=8).digest(), "little") % 10
    return "train" if bucket < 8 else ("validation" if bucket == 8 else "test")


def render(template: str, attrs: Attributes, hero: Character, rng: random.Random) -> str:
    """Fill slots left to right (rng draws independent of sentiment), then resolve markers."""
    he, his, him = PRONOUNS[hero.gender]
    fixed = {"name": hero.name, "he": he, "his": his, "him": him}
    lexicon = TOPIC_LEXICON[attrs.topic]

    def fill(match: re.Match) -> str:
        slot = match.group(1)
        if slot in fixed:
            return fixed[slot]
        if slot == "friend":
            return rng.choice([n for n in NAMES[rng.choice(("she", "he"))] if n != hero.name])
        return rng.choice(lexicon[slot] if slot in lexicon else GENERAL[slot])

    text = template
    while "{" in text:
        text = _SLOT.sub(fill, text)
    side = 1 if attrs.sentiment == "positive" else 2
    text = _SENTIMENT.sub(lambda m: m.group(side), text)
    text = _TENSE.sub(lambda m: m.group(1 if attrs.tense == "present" else 2), text)
    text = _ARTICLE.sub(r"\1n \2", text)
    first = next(i for i, c in enumerate(text) if c.isalpha())
    return text[:first] + text[first].upper() + text[first + 1:]


def _frames_for(topic: str) -> list[str]:
    return FRAMES + TOPIC_LEXICON[topic]["frames"]


def sentence(rng: random.Random, attrs: Attributes, split: str, hero: Character | None = None,
             frames: list[str] | None = None) -> str:
    """One sentiment-bearing sentence with these attributes whose hash falls in ``split``."""
    frames = frames or _frames_for(attrs.topic)
    while True:
        text = render(rng.choice(frames), attrs, hero or random_character(rng), rng)
        if split_of(text) == split:
            return text


def story(rng: random.Random, attrs: Attributes, split: str) -> str:
    """A short story: opener, 2-6 body sentences (about 1 in 5 neutral), closer; one line."""
    hero = random_character(rng)
    body = []
    for _ in range(rng.randint(2, 6)):
        frames = NEUTRAL_FRAMES if rng.random() < 0.2 else _frames_for(attrs.topic)
        body.append(sentence(rng, attrs, split, hero, frames))
    parts = [sentence(rng, attrs, split, hero, OPENERS), *body, sentence(rng, attrs, split, hero, CLOSERS)]
    return " ".join(parts)


def everyday(rng: random.Random, split: str) -> str:
    """One to three unrelated sentences, each with its own random attributes."""
    return " ".join(sentence(rng, random_attributes(rng), split) for _ in range(rng.randint(1, 3)))


def labelled_sentence(rng: random.Random, split: str) -> dict[str, str]:
    """A sentence with its attribute labels, for concept-direction sets."""
    attrs = random_attributes(rng)
    return {"text": sentence(rng, attrs, split), **attrs.as_dict()}


def sentiment_pair(rng: random.Random, split: str) -> dict[str, str]:
    """Two sentences identical except for sentiment words (same frame, slots and hero)."""
    topic, tense = rng.choice(TOPICS), rng.choice(TENSES)
    pos_attrs, neg_attrs = Attributes("positive", topic, tense), Attributes("negative", topic, tense)
    while True:
        frame, hero, seed = rng.choice(_frames_for(topic)), random_character(rng), rng.random()
        pos = render(frame, pos_attrs, hero, random.Random(seed))
        neg = render(frame, neg_attrs, hero, random.Random(seed))
        if split_of(pos) == split and split_of(neg) == split:
            return {"positive": pos, "negative": neg, "topic": topic, "tense": tense}
