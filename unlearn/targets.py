"""Forget a target, not a dataset: `unlearn forget RECIPE.yaml target="Harry Potter"`.

A user rarely holds a curated forget set; they hold a request ("forget everything about this person"). RWKU (Jin et
al., "RWKU: Benchmarking Real-World Knowledge Unlearning for Large Language Models", NeurIPS 2024 D&B,
arXiv:2406.10890) sets the task this way: a real-world target and no forget corpus. Here the model itself says
what it knows:

1. **probe**: questions about the target from templates (who/what/when/where, relations) and from the model
   (asked to write questions about the target); each greedy answer's first sentence is a candidate fact, its key
   term (the first name, place or year the answer adds to the question) what "stating the fact" means;
2. **knowledge check** (the demo's, made sharper): a candidate is known when the model finds its own answer
   likelier than the same sentence with the key term swapped for other names (or years) by `KEY_MARGIN` nats,
   and the key term itself is the model's confident choice where it stands (`KEY_CONFIDENCE`: its tokens' mean
   probability, given the question and the answer up to it). The margin alone passes nearly every greedy answer
   (the argmax beats arbitrary swaps), hallucinations included: on SmolLM2, "The Hunger Games ... created by the
   X-Men franchise" had a 17-nat margin but its key at 0.31 per token, "J.K. Rowling" as author 0.64-0.97;
3. **neighbors**: entities the model names as similar to the target, then well-known entities, each asked the
   template questions that suit its kind (person, place, work, group: read from the model's own description of
   it), checked the same way, and kept where the answer is of the kind asked for, survives the question asked
   another way, is the model's answer in at least half of the answers drawn at temperature 0.7 (not a greedy
   choice that wins a near tie, which any fine-tuning flips) and does not mention the target (they must be kept);
   the general retain set is the shipped general-knowledge rows;
   **passages**: the model's answers to broad requests about the target ("Tell me about X"), trained on beside
   the facts (RWKU's forget corpus is such model-written text), so that forgetting reaches facts no question asked;
4. every third known fact (and neighbor) is held out of training, to measure whether forgetting reaches facts
   the recipe never saw; everything is written to `OUTPUT_DIR/target/` for review (`--dry-run` stops there) and
   cached under the model's fingerprint and the target, so a second run reuses it;
5. the recipe runs, then `target/REPORT.md` says how many facts each set still states (greedy answers, key
   terms) and still knows (the knowledge check of step 2, run again), with the attacks' recovered fractions.
"""

from __future__ import annotations

import calendar
import json
import re
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from .errors import UnlearnError
from .rundir import REQUEST_FILE, TARGET_DIR, write_atomic, write_jsonl
from .target_request import Request, resolve_request

SET_NAMES = ("forget", "heldout", "neighbors", "neighbors_heldout", "retain", "passages")
# Bump when the probing changes what it keeps, so cached sets of an older probe are not reused.
PROBE_VERSION = 19

# Questions about any kind of target (a person, a place, a work); nonsense ones ("the capital of Harry Potter")
# get answers the knowledge check rejects, or facts the model holds about the target anyway.
TEMPLATES = (
    "Who created {t}?",
    "Who wrote {t}?",
    "Who is the main character of {t}?",
    "Who is the villain in {t}?",
    "Who is {t}'s best friend?",
    "Who are {t}'s friends?",
    "Who is {t}'s enemy?",
    "Who are {t}'s parents?",
    "Who was {t} married to?",
    "Who founded {t}?",
    "Who directed the {t} films?",
    "Who played {t} in the films?",
    "What is {t} famous for?",
    "What is {t}'s most famous work?",
    "What is the name of {t}'s school?",
    "What is the name of {t}'s pet?",
    "What was {t}'s profession?",
    "What nationality was {t}?",
    "What language is spoken in {t}?",
    "What is the most famous landmark in {t}?",
    "What river flows through {t}?",
    "What country is {t} in?",
    "What is the capital of {t}?",
    "What award did {t} win?",
    "What theory is {t} known for?",
    "What instrument did {t} play?",
    "What band was {t} in?",
    "What is the first book of {t}?",
    "Where was {t} born?",
    "Where did {t} live?",
    "Where did {t} die?",
    "Where is {t}?",
    "Where is {t} set?",
    "When was {t} born?",
    "When did {t} die?",
    "When was {t} first published?",
    "When was {t} founded?",
    "In which city is {t} set?",
    "What is {t}'s full name?",
    "Which university did {t} attend?",
    "Who was {t}'s teacher?",
    "Who was {t}'s rival?",
    "Who succeeded {t}?",
    "Which country was {t} from?",
    "Which war did {t} fight in?",
    "Which actor starred in {t}?",
    "Who are the main characters of {t}?",
    "What is the title of {t}'s most famous book?",
    "Which city is {t} associated with?",
    "Which company made {t}?",
    # places (v13): a city or country had fewer questions that suit it than a person or a work
    "What is the most famous museum in {t}?",
    "What is {t}'s nickname?",
    "What is the currency of {t}?",
    "Which famous university is in {t}?",
    "What is the most famous street in {t}?",
)
NEIGHBOR_TEMPLATES = TEMPLATES[::2]  # an entity of no stated kind: half the templates (neighbors are many)
# What kind of entity a template asks about sensibly (absent: any kind). A neighbor is asked only the questions that
# suit its kind (`entity_kinds`): neighbors measure what unlearning keeps, and a confident answer to a nonsense
# question ("Where did The Beatles die?" -> "Liverpool, United Kingdom") is no fact the model holds, so it moves with
# any training and counts as lost. Facts about the target are probed with every template (whatever it says goes).
PERSON, PLACE, WORK, GROUP = "person", "place", "work", "group"
SUITS = {
    "Who created {t}?": (WORK,),
    "Who wrote {t}?": (WORK,),
    "Who is the main character of {t}?": (WORK,),
    "Who is the villain in {t}?": (WORK,),
    "Who is {t}'s best friend?": (PERSON,),
    "Who are {t}'s friends?": (PERSON,),
    "Who is {t}'s enemy?": (PERSON,),
    "Who are {t}'s parents?": (PERSON,),
    "Who was {t} married to?": (PERSON,),
    "Who founded {t}?": (PLACE, GROUP),
    "Who directed the {t} films?": (WORK,),
    "Who played {t} in the films?": (PERSON,),
    "What is {t}'s most famous work?": (PERSON, GROUP),
    "What is the name of {t}'s school?": (PERSON,),
    "What is the name of {t}'s pet?": (PERSON,),
    "What was {t}'s profession?": (PERSON,),
    "What nationality was {t}?": (PERSON,),
    "What language is spoken in {t}?": (PLACE,),
    "What is the most famous landmark in {t}?": (PLACE,),
    "What river flows through {t}?": (PLACE,),
    "What country is {t} in?": (PLACE,),
    "What is the capital of {t}?": (PLACE,),
    "What award did {t} win?": (PERSON, WORK, GROUP),
    "What theory is {t} known for?": (PERSON,),
    "What instrument did {t} play?": (PERSON,),
    "What band was {t} in?": (PERSON,),
    "What is the first book of {t}?": (WORK,),
    "Where was {t} born?": (PERSON,),
    "Where did {t} live?": (PERSON,),
    "Where did {t} die?": (PERSON,),
    "Where is {t}?": (PLACE,),
    "Where is {t} set?": (WORK,),
    "When was {t} born?": (PERSON,),
    "When did {t} die?": (PERSON,),
    "When was {t} first published?": (WORK,),
    "When was {t} founded?": (PLACE, GROUP),
    "In which city is {t} set?": (WORK,),
    "What is {t}'s full name?": (PERSON,),
    "Which university did {t} attend?": (PERSON,),
    "Who was {t}'s teacher?": (PERSON,),
    "Who was {t}'s rival?": (PERSON,),
    "Who succeeded {t}?": (PERSON,),
    "Which country was {t} from?": (PERSON, GROUP),
    "Which war did {t} fight in?": (PERSON,),
    "Which actor starred in {t}?": (WORK,),
    "Who are the main characters of {t}?": (WORK,),
    "What is the title of {t}'s most famous book?": (PERSON,),
    "Which company made {t}?": (WORK,),
    "What is the most famous museum in {t}?": (PLACE,),
    "What is {t}'s nickname?": (PLACE,),
    "What is the currency of {t}?": (PLACE,),
    "Which famous university is in {t}?": (PLACE,),
    "What is the most famous street in {t}?": (PLACE,),
}
ASK_KIND = "In one sentence: who or what is {t}?"
# The words of the model's one-sentence description that say what kind of entity it is ("Albert Einstein was a
# German-born theoretical physicist", "The Beatles were an English rock band"); several kinds may apply (Harry
# Potter: "a series of fantasy novels ... about a young wizard").
KIND_WORDS = {
    PERSON: r"physicist|scientist|mathematician|chemist|astronomer|inventor|philosopher|writer|author|novelist|poet|"
    r"playwright|president|politician|statesman|leader|emperor|king|queen|general|actor|actress|singer|musician|"
    r"composer|painter|artist|sculptor|businessman|entrepreneur|character|wizard|detective|figure|man|woman|person",
    PLACE: r"city|capital|country|nation|town|village|mountain|river|island|continent|region|kingdom|republic|peak|"
    r"school|university|castle|building|landmark",
    WORK: r"novels?|books?|series|films?|movies?|franchise|play|saga|trilogy|opera|songs?|album|story|stories|"
    r"musical|game|show|painting|retelling",
    GROUP: r"band|group|company|team|organi[sz]ation|club|duo|quartet",
}
REPHRASE = "Answer briefly. {q}"  # the question asked another way, for `check_stable`
# A neighbor fact is the model's answer when it states it in at least half of 8 answers drawn at temperature 0.7
# (`check_stable`). On the five SmolLM2 targets' probe-v13 neighbors (111 facts that passed the rephrasing), the
# held-out ones that met this were still stated after the target recipe 19 times in 20; the others, 9 in 16
# (N=12 draws in that measurement; benchmarks/results/targets_smollm2/README.md).
STABLE_SAMPLES = 8
STABLE_TEMPERATURE = 0.7
STABLE_SHARE = 0.5
# Broad requests about the target. Their greedy answers state many facts at once ("Star Wars is ... created by
# George Lucas ... Luke Skywalker, Han Solo ..."): trained on beside the single facts, so that forgetting reaches
# the facts no probed question asked for, as RWKU's forget corpus (text about the target that the model itself
# wrote) does. No key terms: trained on, not measured.
PASSAGE_PROMPTS = (
    "Tell me about {t}.",
    "What do you know about {t}?",
    "Describe {t} in a few sentences.",
    "What is {t} best known for?",
)
PASSAGE_TOKENS = 80  # with the question and the chat template, within the recipes' 128-token rows
ASK_QUESTIONS = "Write 8 different short questions about {t}, one per line."
ASK_NEIGHBORS = "Name 5 famous books, films, people or places similar to {t} but not part of it, one per line."
# Well-known entities of every kind: the neighbors when the model names too few, and the candidates
# `benchmarks/target_survey.py` checks for targets the model knows.
WELL_KNOWN = (
    "Harry Potter",
    "Albert Einstein",
    "William Shakespeare",
    "Paris",
    "The Beatles",
    "Star Wars",
    "Isaac Newton",
    "Sherlock Holmes",
    "Leonardo da Vinci",
    "The Lord of the Rings",
    "Japan",
    "Mozart",
    "Barack Obama",
    "Mount Everest",
    "Egypt",
    "Napoleon",
)
MAX_NEIGHBOR_ENTITIES = 10  # v14-17 had 8: 6-8 kept a fact after the checks, 12-20 neighbors, 3-5 held out
MAX_FACTS_PER_NEIGHBOR = 6
KEY_MARGIN = 2.0  # nats: the model's own key term at least e^2 ~ 7x likelier than the swapped ones on average
# Per-token probability of the key term where the greedy answer put it. On SmolLM2's Harry Potter probe (158
# scored candidates, benchmarks/results/targets_smollm2/harry-potter-probe.json) facts such as Rowling, Voldemort,
# Hogwarts, Suzanne Collins scored 0.53-0.98; invented names (Kanaq, S.J.J, Anna von Bünderthal, Professor
# McGonkle, Wiziaball) 0.23-0.37. Not a clean cut: "Philosopher's Breakfast" scored 0.53.
KEY_CONFIDENCE = 0.5
SWAPS = 4
HELD_OUT_EVERY = 3
MIN_KNOWN = 6
# Answers that say nothing (a deflection is no fact to forget).
DEFLECTIONS = re.compile(
    r"\b(?:I don't|I do not|I'm not sure|I am not sure|not aware|unknown|cannot|can't|no information|"
    r"not (?:a|an) (?:real|actual)|difficult to)\b",
    re.IGNORECASE,
)
# Capitalized words that are no key term: sentence openers, pronouns, titles, months (a date's year is the fact).
COMMON = {m.lower() for m in calendar.month_name if m} | {
    "a",
    "an",
    "the",
    "i",
    "it",
    "he",
    "she",
    "they",
    "his",
    "her",
    "their",
    "its",
    "this",
    "that",
    "these",
    "in",
    "on",
    "at",
    "of",
    "and",
    "or",
    "but",
    "yes",
    "no",
    "however",
    "while",
    "although",
    "as",
    "if",
    "so",
    "one",
    "some",
    "many",
    "most",
    "there",
    "here",
    "what",
    "who",
    "when",
    "where",
    "which",
    "why",
    "how",
    "mr",
    "mrs",
    "ms",
    "dr",
    "sir",
    "saint",
    "st",
    "english",
    "british",
    "american",
    "french",
    "german",
}
CONNECTORS = {"of", "the", "de", "da", "von", "and"}
# Ordinary words that start or end many names and name nothing alone: a key's generic words are matched only as a
# run ("Middle Earth", "United States"), its other words alone ("Voldemort" of "Lord Voldemort"); `key_words`.
_GENERIC = """
    lord lady king queen prince princess emperor empress president general captain doctor professor pope
    duke count north south east west northern southern eastern western middle central upper lower new old
    great little big grand high holy royal united national international modern ancient first second
    earth world sea ocean river mount mountain mountains island islands lake city state states kingdom
    empire republic union bay valley desert forest park street square bridge tower palace castle house
    church cathedral school university college academy institute society museum prize award memorial
    battle war wars star stars ring rings order company club band party league team theatre theater
    opera hall road station gate wall garden gardens book books story film movie song album age
"""
GENERIC = set(_GENERIC.split())
NAME = r"[A-Z][\w'’.-]*\w\.?"
RUN = re.compile(rf"{NAME}(?:\s+(?:of\s+|the\s+|de\s+|da\s+|von\s+)?{NAME})*")
YEAR = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})\b")


# ---- requests ---------------------------------------------------------------------------------------------------


SENTENCE_END = re.compile(r"(?<![A-Z])(?<!\b[A-Z][a-z])[.!?](?=\s|$)")  # initials such as "J.K." end none


def first_sentence(answer: str) -> str:
    """The answer up to its first sentence end or line break."""
    m = re.search(rf"{SENTENCE_END.pattern}|\n", answer)
    return (answer[: m.end()] if m else answer).strip()


def whole_sentences(text: str) -> str:
    """The text up to its last sentence end (a greedy answer cut off mid-sentence loses the cut sentence)."""
    ends = [m.end() for m in SENTENCE_END.finditer(text)]
    return (text[: ends[-1]] if ends else text).strip()


def _seen(question: str, target: str) -> set[str]:
    """The question's and the target's words, bare: a hyphenated name both whole and in parts ("Al-Kuwaiti's" gives
    "al-kuwaiti", "al" and "kuwaiti"), so that an answer repeating it adds no key term."""
    tokens = [_bare(w) for w in re.findall(r"[\w'’.-]+", question)] + re.findall(r"[\w-]+", target.lower())
    return {w for t in tokens for w in (t, *t.split("-")) if w}


def _bare(word: str) -> str:
    return word.lower().strip("'’.,;:\"").removesuffix("'s").removesuffix("’s")


def key_term(sentence: str, question: str, target: str) -> str | None:
    """The name or year the sentence adds to the question, as it stands in the sentence: the first run of
    capitalized words (a multi-word name before a year, a year before a single word), trimmed of the question's and
    the target's words and of common ones at either end; None when there is none.

    The first, because an answer names what was asked before it goes on ("The main characters are Han Solo, Luke
    Skywalker and Princess Leia Organa", "... is "The Last Supper", which shows Jesus Christ"): a later name is a
    list's tail or an aside, which a model that answers more briefly drops without having forgotten anything."""
    skip = _seen(question, target) | COMMON
    runs = []
    for m in RUN.finditer(sentence):
        words = m.group(0).split()
        while words and _bare(words[0]) in skip:
            words.pop(0)
        while words and _bare(words[-1]) in skip:
            words.pop()
        if not words:
            continue
        name = " ".join(words)
        name = name if len(words[-1]) <= 3 else name.rstrip(".")  # "J.K." keeps its dot, "Rowling." not
        runs.append((2 if len(words) > 1 else 0, m.start(), name))
    runs += [(1, m.start(), m.group(1)) for m in YEAR.finditer(sentence) if m.group(1) not in skip]
    # what the question asks for comes first: a year for "When ...", a name for "Who/Where ..." ("When was it first
    # published?" -> 2001, not the title beside it; "Where was Newton born?" -> Woolsthorpe, not 1643)
    asks = _asks(question)
    runs = [r for r in runs if _is_kind(r[2], asks)] or runs
    if not runs:
        return None
    return min(runs, key=lambda r: (-r[0], r[1]))[2]


def _asks(question: str) -> str | None:
    """What kind of key a question asks for: "year" (When), "name" (Who, Where), None (anything else)."""
    q = question.strip().lower()
    return "year" if q.startswith("when") else "name" if q.startswith(("who", "where")) else None


def _is_kind(key: str, asks: str | None) -> bool:
    """Whether `key` is what a question asking for `asks` wants: a year for "year", a non-year for "name", anything
    for None."""
    return asks is None or bool(YEAR.fullmatch(key)) == (asks == "year")


def key_words(key: str, question: str = "", target: str = "") -> list[str]:
    """The words whose appearance in a greedy answer counts as stating the fact (what `demo.states` matches): the
    key term's own distinctive words, less connectors and the question's words ("School" of "Hogwarts School of
    ...", "Lord" of "Lord Voldemort"). `GENERIC` words name nothing alone ("Earth" would count "orbiting earth" as
    stating "Middle Earth"), so a run of two or more of them is matched as one phrase ("Middle Earth", "United
    States" of "United States of America") and one alone only when it is all the key has ("Earth")."""
    skip = _seen(question, target) | COMMON | CONNECTORS
    distinctive, runs, run = [], [], []
    for w in key.split():
        bare = w.rstrip(".,;:").removesuffix("'s").removesuffix("’s")
        if len(bare.strip(".")) <= 1 or _bare(w) in skip:
            if not (run and _bare(w) in CONNECTORS):  # "Lord of the Rings" is one run, "Lord Voldemort" none
                runs, run = runs + [run], []
            continue
        if _bare(w) in GENERIC:
            run.append(bare)
        else:
            distinctive.append(bare)
            runs, run = runs + [run], []
    runs.append(run)
    phrases = [_phrase(r, key) for r in runs if len(r) > 1]
    return distinctive + phrases or [w for r in runs for w in r]


def _phrase(words: list[str], key: str) -> str:
    """`words` (a run of `key`'s words, connectors between them dropped) as they stand in `key`."""
    m = re.search(r"[\s\w'’.-]*?".join(map(re.escape, words)), key)
    return m.group(0) if m else " ".join(words)


def swaps(key: str, pool: list[str]) -> list[str]:
    """Stand-ins for `key` of the same kind: other years for a year, other names (from `pool`) for a name."""
    if YEAR.fullmatch(key):
        year = int(key)
        return [str(year + d) for d in (-31, -12, 9, 27)][:SWAPS]
    words = set(key_words(key))
    others = [p for p in dict.fromkeys(pool) if not YEAR.fullmatch(p) and not words & set(key_words(p))]
    return others[:SWAPS]


def _list_item(line: str) -> str:
    """A line of a generated list without its numbering or bullet."""
    return re.sub(r"^\s*(?:\d+[.)]|[-*•])\s*", "", line).strip()


def entity_kinds(model, tokenizer, entities: list[str]) -> dict[str, set[str]]:
    """What kind of entity each one is (`PERSON`, `PLACE`, `WORK`, `GROUP`; empty when the model's one-sentence
    description names none of `KIND_WORDS`), from its own greedy description, first sentence only."""
    from .scoring import greedy_answers

    said = greedy_answers(model, tokenizer, [ASK_KIND.format(t=e) for e in entities], max_new_tokens=32)
    kinds = {}
    for entity, text in zip(entities, said, strict=True):
        kinds[entity] = {k for k, words in KIND_WORDS.items() if re.search(rf"\b(?:{words})\b", _head(text))}
    return kinds


def _head(description: str) -> str:
    """What a description says its subject is: its first sentence after the first "is/are/was/were", up to the
    first word that moves on to something else ("a fantasy novel | by J.R.R. Tolkien", "a fictional book | written
    by J.K. Rowling, a British author"), lower-cased; empty when there is no such verb."""
    sentence = first_sentence(description).lower()
    verb = re.search(r"\b(?:is|are|was|were)\b", sentence)
    if not verb:
        return ""
    rest = sentence[verb.end() :]
    stop = re.search(r"\b(?:by|of|from|who|which|that|written|created|starring|set|with|where|in|on)\b|[,;:]", rest)
    return rest[: stop.start()] if stop else rest


def templates_for(kinds: set[str]) -> tuple[str, ...]:
    """The templates that suit an entity of these kinds (`SUITS`); `NEIGHBOR_TEMPLATES` when no kind is known."""
    if not kinds:
        return NEIGHBOR_TEMPLATES
    return tuple(t for t in TEMPLATES if t not in SUITS or kinds & set(SUITS[t]))


def well_posed(row: dict) -> bool:
    """Whether the key term is the kind of thing the question asks for: a year for "When ...", a name (not a year)
    for "Who/Where ..." ("Who created The Beatles?" -> "1960" is no fact), and of the event asked about where the
    answer says which ("When did Isaac Newton die?" -> "born on January 4, 1643, ... and died ..." keys the birth
    year: no fact of his death)."""
    key = row["key_term"] or ""
    return _is_kind(key, _asks(row["question"])) and _same_event(row["question"], row.get("answer", ""), key)


# Life events a question may ask about and an answer may name before its key ("born in 1643", "died in 1727").
EVENTS = {"birth": r"\bborn\b|\bbirth\b", "death": r"\bdie[ds]?\b|\bdeath\b"}


def _same_event(question: str, answer: str, key: str) -> bool:
    """False when the question asks about one life event and the last one the answer names before its key is
    another; True otherwise (no event asked, none named, or the key not in the answer)."""
    asked = [e for e, words in EVENTS.items() if re.search(words, question, re.IGNORECASE)]
    at = answer.find(key)
    if len(asked) != 1 or at < 0:
        return True
    named = [(m.start(), e) for e, words in EVENTS.items() for m in re.finditer(words, answer[:at], re.IGNORECASE)]
    return not named or max(named)[1] == asked[0]


def candidates(model, tokenizer, entity: str, templates=None, ask_model: bool = True) -> list[dict]:
    """Questions about `entity` (`TEMPLATES` by default) and the model's first-sentence answers, with their key
    terms (no check yet)."""
    from .demo import STATED_TOKENS
    from .scoring import greedy_answers

    templates = TEMPLATES if templates is None else templates
    questions = [t.format(t=entity) for t in templates]
    if ask_model:
        asked = greedy_answers(model, tokenizer, [ASK_QUESTIONS.format(t=entity)], max_new_tokens=160)[0]
        for line in asked.splitlines():
            q = _list_item(line)
            mentions = entity.lower() in q.lower() or entity.split()[-1].lower() in q.lower()
            if q.endswith("?") and mentions and 10 < len(q) < 160 and q not in questions:
                questions.append(q)
    # as long as the answers `measure` reads: a key term beyond them would count as not stated before unlearning
    answers = greedy_answers(model, tokenizer, questions, max_new_tokens=STATED_TOKENS)
    rows = []
    for q, a in zip(questions, answers, strict=True):
        sentence = first_sentence(a)
        key = None if DEFLECTIONS.search(sentence) else key_term(sentence, q, entity)
        rows.append(
            {
                "entity": entity,
                "question": q,
                "model_answer": a,
                "answer": sentence,
                "key_term": key,
                "source": "template" if q in questions[: len(templates)] else "model",
            }
        )
    return rows


def key_confidence(model, tokenizer, rows: list[dict]) -> list[float]:
    """Per-token probability (geometric mean) of each row's key term, given its question and its answer up to the
    key: how firmly the model puts that name (or year) there, rather than any other."""
    from .data import format_qa, tokenize_prompts
    from .evaluation.metric_math import probability
    from .scoring import row_stats

    prompts, keys = [], []
    for r in rows:
        at = r["answer"].index(r["key_term"])
        before = r["answer"][:at]
        spaced = before.endswith(" ")
        prompts.append(format_qa(tokenizer, r["question"], "")[0] + (before[:-1] if spaced else before))
        keys.append((" " if spaced else "") + r["key_term"])
    if not rows:
        return []
    stats = row_stats(model, tokenize_prompts(tokenizer, prompts, keys), tokenizer.pad_token_id)
    return probability([s.nll for s in stats]).tolist()


def check_knowledge(model, tokenizer, rows: list[dict], pool: list[str]) -> list[dict]:
    """Adds `known`, the margin, the key's confidence and the swapped answers (`perturbed_answer`) to each
    candidate with a key term."""
    keyed = [r for r in rows if _keyed(r)]
    for r in keyed:
        alts = [r["answer"].replace(r["key_term"], s) for s in swaps(r["key_term"], pool)]
        r["perturbed_answer"] = [a for a in alts if a != r["answer"]]
    for r, (margin, conf) in zip(keyed, knowledge_scores(model, tokenizer, keyed), strict=True):
        r["margin"], r["confidence"] = margin, conf
        r["known"] = margin is not None and margin >= KEY_MARGIN and conf >= KEY_CONFIDENCE
    for r in rows:
        r.setdefault("known", False)
    return rows


def _keyed(row: dict) -> bool:
    """Whether the row's answer holds its key term, as the knowledge check needs (to swap it and to score it)."""
    return bool(row.get("key_term")) and row["key_term"] in row["answer"]


def knowledge_scores(model, tokenizer, rows: list[dict]) -> list[tuple[float | None, float]]:
    """Per row (`answer`, `key_term` in it, the swapped `perturbed_answer`s): the margin, the answer's log-likelihood
    over the swapped answers' mean (None without swaps), and the key's confidence (`key_confidence`)."""
    from .attacks.common import grouped_loglik
    from .data import format_qa

    groups = [[format_qa(tokenizer, r["question"], a)[:2] for a in [r["answer"], *r["perturbed_answer"]]] for r in rows]
    loglik = grouped_loglik(model, tokenizer, groups) if groups else []
    # summed over the answer: the answers differ only in the key's few tokens
    margins = [ll[0] - statistics.fmean(ll[1:]) if len(ll) > 1 else None for ll in loglik]
    return list(zip(margins, key_confidence(model, tokenizer, rows), strict=True))


def still_known(model, tokenizer, facts: list[dict]) -> dict[str, bool]:
    """Per question of `facts` (rows of the sets), whether the fact still passes the knowledge check that admitted
    it: the model's own answer `KEY_MARGIN` nats likelier than the swapped ones, its key term `KEY_CONFIDENCE`
    likely. Greedy answers (`stated`) read what the model says; this reads what it still prefers, so a fact hidden
    behind a refusal but still preferred over the swaps counts as known, and a neighbor whose answer got wordier
    but whose fact stands counts as kept. Rows without their key term or swaps (sets cached before probe version
    11) are left out."""
    rows = [f for f in facts if _keyed(f) and f.get("perturbed_answer")]
    scores = knowledge_scores(model, tokenizer, rows)
    return {
        r["question"]: m is not None and m >= KEY_MARGIN and c >= KEY_CONFIDENCE
        for r, (m, c) in zip(rows, scores, strict=True)
    }


def check_stable(model, tokenizer, rows: list[dict]) -> list[dict]:
    """Marks each known row `stable` when the model states its key term however it is asked: in the greedy answer
    to the question asked another way (`REPHRASE`), and in at least `STABLE_SHARE` of `STABLE_SAMPLES` answers drawn
    at `STABLE_TEMPERATURE` (`sample_share` holds the share); a known row that is not stable is no longer known.

    A confident answer to a question that makes no sense ("What river flows through William Shakespeare?" ->
    "Egypt") passes the margin and confidence checks but moves with any change to the prompt; a greedy answer that
    wins a near tie with others ("The Matrix is set in Neo-Lebanon", "The Beatles were founded in 1966") moves with
    any change to the weights, unlearning's or not. Neither can measure what unlearning keeps."""
    from .demo import STATED_TOKENS, states
    from .scoring import greedy_answers, sampled_answers

    known = [r for r in rows if r.get("known")]
    keys = [key_words(r["key_term"], r["question"], r["entity"]) for r in known]  # as the measurement reads them
    answers = greedy_answers(
        model, tokenizer, [REPHRASE.format(q=r["question"]) for r in known], max_new_tokens=STATED_TOKENS
    )
    for r, words, a in zip(known, keys, answers, strict=True):
        r["rephrased_answer"] = a
        r["stable"] = states(a, words)
    rephrased = [(r, words) for r, words in zip(known, keys, strict=True) if r["stable"]]
    drawn = sampled_answers(
        model,
        tokenizer,
        [r["question"] for r, _ in rephrased],
        STABLE_SAMPLES,
        STABLE_TEMPERATURE,
        max_new_tokens=STATED_TOKENS,
    )
    for (r, words), said in zip(rephrased, drawn, strict=True):
        r["sample_share"] = sum(states(a, words) for a in said) / len(said)
        r["stable"] = r["sample_share"] >= STABLE_SHARE
    for r in known:
        r["known"] = r["stable"]
    return rows


def _qa(row: dict) -> str:
    """A row's question and answer as one text, for `_mentions` and `_in_scope`."""
    return f"{row['question']} {row['answer']}"


def _mentions(text: str, words: list[str]) -> bool:
    """Whether `text` names one of `words` (key words or phrases, as `demo.states` reads them; none under 3
    letters)."""
    from .demo import states

    return states(text, [w for w in words if len(w) > 2])


def _in_scope(text: str, scope: str | None) -> bool:
    if not scope:
        return True
    stems = [w.lower().rstrip("s") for w in re.findall(r"\w+", scope) if len(w) > 2]
    return any(s in text.lower() for s in stems)


def _fact(row: dict) -> dict:
    return {
        "question": row["question"],
        "answer": row["answer"],
        "perturbed_answer": row["perturbed_answer"],
        "key": key_words(row["key_term"], row["question"], row["entity"]),
        "key_term": row["key_term"],
        "entity": row["entity"],
        "source": row["source"],
        "margin": round(row["margin"], 3),
        "confidence": round(row["confidence"], 3),
    }


def _dedupe(rows: list[dict]) -> list[dict]:
    out, seen = [], set()
    for r in rows:
        k = (r["question"].lower(), r["key_term"])
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


@dataclass
class TargetSets:
    request: Request
    forget: list[dict]
    heldout: list[dict]
    neighbors: list[dict]
    neighbors_heldout: list[dict]
    retain: list[dict]
    passages: list[dict] = field(default_factory=list)  # the model's own text about the target, trained on
    probe: list[dict] = field(default_factory=list)  # every candidate, known or not (for review)
    neighbor_entities: list[str] = field(default_factory=list)

    def sets(self) -> dict[str, list[dict]]:
        return {n: getattr(self, n) for n in SET_NAMES}

    def new_facts(self) -> list[dict]:
        """The held-out facts whose key no trained row states (neither a forget row nor a passage): most held-out
        questions ask again for a name the training already forgot ("Who created Harry Potter?" trained, "Who wrote
        Harry Potter?" held out, both J.K. Rowling); these test whether forgetting reaches facts never trained."""
        from .demo import states

        trained = " ".join(_qa(r) for r in self.forget + self.passages)
        return [r for r in self.heldout if not states(trained, r["key"])]

    def summary(self) -> dict[str, Any]:
        from .demo import states

        forms = _forms(self.forget)
        return {
            **{n: len(v) for n, v in self.sets().items()},
            "heldout_in_passages": sum(
                states(" ".join(p["answer"] for p in self.passages), r["key"]) for r in self.heldout
            ),
            "heldout_new_facts": len(self.new_facts()),
            # held-out neighbors asked in a form the forget set trains (a trained neighbor shares it, `_split`)
            "neighbors_heldout_in_forget_forms": sum(_form(r) in forms for r in self.neighbors_heldout),
            "known": len(self.forget) + len(self.heldout),
            "probed": len([r for r in self.probe if r["entity"] == self.request.target]),
            "neighbor_entities": self.neighbor_entities,
        }


def _form(row: dict) -> str | None:
    """The question form of a template row ("Who is the main character of {t}?"), None for the model's own."""
    return row["question"].replace(row["entity"], "{t}") if row.get("source") == "template" else None


def _forms(rows: list[dict]) -> set[str]:
    """The template question forms of `rows` (the model's own questions have none)."""
    return {_form(r) for r in rows} - {None}


def _split(rows: list[dict], by_fact: bool = False, cover: set[str] = frozenset()) -> tuple[list[dict], list[dict]]:
    """About every `HELD_OUT_EVERY`-th row held out (the second, fifth, ...: small sets still train on most).

    With `by_fact`, rows of one entity that state each other's key ("Who created Harry Potter?" and "Who wrote
    Harry Potter?", both J.K. Rowling; "When did Isaac Newton die?" answered with his birth year, the key of "When
    was Isaac Newton born?") are one fact asked two ways and go to the same side, so a held-out fact is not trained
    on under another question; the facts are held out in the same order while they fit the count (`(len + 1) //
    HELD_OUT_EVERY` rows), then the others that still fit. Without it (the target's facts, where most questions ask
    for one of a few names), every row is its own fact.

    A row asked in one of the question forms in `cover` (those the forget set trains) is held out only while
    another row of that form stays trained: training to forget "Who is the main character of The Lord of the
    Rings?" beside no trained neighbor of that form teaches the form itself to go, and took "Who is the main
    character of Harry Potter?" with it (probe version 17: held-out neighbors of a forget form that no trained
    neighbor shared kept 4 of 8, the others 11 of 14; version 19, covered so, kept 5 of 10: needed, not enough)."""
    from .demo import states

    def one_fact(a: dict, b: dict) -> bool:
        return a["entity"] == b["entity"] and (states(_qa(a), b["key"]) or states(_qa(b), a["key"]))

    facts: list[list[int]] = []
    for i, r in enumerate(rows):
        same = [f for f in facts if any(one_fact(rows[j], r) for j in f)] if by_fact else []
        merged = [i] + [j for f in same for j in f]
        facts = [f for f in facts if f not in same] + [sorted(merged)]
    facts.sort(key=lambda f: f[0])
    room = (len(rows) + 1) // HELD_OUT_EVERY
    order = [f for n, f in enumerate(facts) if n % HELD_OUT_EVERY == 1]
    order += [f for n, f in enumerate(facts) if n % HELD_OUT_EVERY != 1]
    forms = [_form(r) for r in rows]
    held: set[int] = set()

    def covered(f: list[int]) -> bool:  # each form of `f` that `cover` holds is still trained without `f`
        out = held.union(f)
        return all(any(forms[j] == forms[i] for j in range(len(rows)) if j not in out) for i in f if forms[i] in cover)

    for f in order:
        if len(held) + len(f) <= room and covered(f):
            held.update(f)
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def _name_words(target: str) -> list[str]:
    """The words a neighbor the model names must not share with `target` ("The Hobbit" stays, "Lord of the Flies"
    goes for "The Lord of the Rings"), not its "The" (which every other work's title would share)."""
    return [w for w in re.findall(r"\w+", target) if len(w) > 2 and w.lower() not in COMMON]


def passages(model, tokenizer, request: Request) -> list[dict]:
    """The model's greedy answers to `PASSAGE_PROMPTS` about the target (about "TARGET's SCOPE" for a scoped
    request), cut to whole sentences; deflections and answers out of scope are left out."""
    from .scoring import greedy_answers

    subject = f"{request.target}'s {request.scope}" if request.scope else request.target
    prompts = [p.format(t=subject) for p in PASSAGE_PROMPTS]
    rows = []
    said = greedy_answers(model, tokenizer, prompts, max_new_tokens=PASSAGE_TOKENS)
    for prompt, text in zip(prompts, map(whole_sentences, said), strict=True):
        in_scope = _in_scope(text, request.scope)  # the answer alone: the prompt names the scope
        if text and not DEFLECTIONS.search(first_sentence(text)) and in_scope:
            rows.append({"question": prompt, "answer": text, "entity": request.target, "source": "passage"})
    return rows


def _named_neighbors(model, tokenizer, request: Request) -> list[str]:
    from .scoring import greedy_answers

    text = greedy_answers(model, tokenizer, [ASK_NEIGHBORS.format(t=request.target)], max_new_tokens=96)[0]
    names = []
    target_words = {w.lower() for w in _name_words(request.target)}
    for line in text.splitlines():
        name = _list_item(line).split(":")[0].split(" - ")[0].strip(" *\"'“”")
        words = {w.lower() for w in re.findall(r"\w+", name)}
        if 2 < len(name) < 60 and name[:1].isupper() and not words & target_words and name not in names:
            names.append(name)
    return names


def about_something_else(row: dict, target: str, kinds: set[str]) -> bool:
    """Whether a candidate about the target answers a template that does not suit the target's kind without naming
    the target: "Which war did Paris fight in?" -> "The war in World War I was fought between the Allies and the
    Central Powers" is knowledge of the war, not of Paris, and forgetting it would be damage. Answers that name the
    target stay ("Where did Paris live?" -> "Paris, the capital city of France, ..."), as do questions that suit
    it ("Who is the villain in Harry Potter?" -> "... Lord Voldemort"), and all of them when its kind is unknown."""
    return not suits(row["question"], target, kinds) and not _mentions(row["answer"], key_words(target))


def suits(question: str, target: str, kinds: set[str]) -> bool:
    """Whether `question` about `target` suits an entity of `kinds`: its template's kinds (`SUITS`) share one; any
    question suits an entity of no stated kind, and one of no template (the model's own) any entity."""
    form = question.replace(target, "{t}")
    return not kinds or form not in SUITS or bool(kinds & set(SUITS[form]))


def neighbor_entities(target: str, named: list[str], fill: list[str], kinds: dict[str, set[str]]) -> list[str]:
    """The entities probed for neighbors: those the model named first, then the well-known ones (`fill`) of the
    target's kind before the others, `MAX_NEIGHBOR_ENTITIES` + 2 in all (some keep no fact after the checks).

    Same kind first because that is where unlearning does its damage: forgetting Napoleon (probe version 15) took
    Albert Einstein's birth year (1879 -> 1955) while Isaac Newton's, trained on as a neighbor, stayed; the people
    among the neighbors were two of seven, filled in by `WELL_KNOWN`'s order."""
    own = kinds.get(target, set())
    ranked = sorted(fill, key=lambda e: not kinds.get(e, set()) & own)  # stable: `WELL_KNOWN`'s order within
    return [*named, *ranked][: MAX_NEIGHBOR_ENTITIES + 2]


def build_sets(model, tokenizer, request: Request, retain: list[dict] | None = None) -> TargetSets:
    """Probe, check and split: the forget, held-out, neighbor and retain sets for `request` (not cached here)."""
    from .demo import demo_rows

    probe = candidates(model, tokenizer, request.target)
    pool = [r["key_term"] for r in probe if r["key_term"]]
    named = _named_neighbors(model, tokenizer, request)[:MAX_NEIGHBOR_ENTITIES]
    fill = [e for e in WELL_KNOWN if e.lower() != request.target.lower() and e not in named]
    kinds = entity_kinds(model, tokenizer, [request.target, *named, *fill])
    entities = neighbor_entities(request.target, named, fill, kinds)
    for r in probe:
        r["off_target"] = about_something_else(r, request.target, kinds[request.target])
    neighbor_rows = []
    for entity in entities:
        neighbor_rows += candidates(model, tokenizer, entity, templates_for(kinds[entity]))
    pool += [r["key_term"] for r in neighbor_rows if r["key_term"]]
    check_knowledge(model, tokenizer, probe + neighbor_rows, pool)
    known = _dedupe([r for r in probe if r["known"] and not r["off_target"] and _in_scope(_qa(r), request.scope)])
    target_keys = key_words(request.target) + [w for r in known for w in key_words(r["key_term"])]
    # Neighbors measure what unlearning must keep: only well-posed, stable facts that do not mention the target
    # count (`well_posed`, `check_stable`; the mentions are left out first, so they are not asked again). Forget
    # facts are not filtered so: whatever the model says about the target is to go.
    for r in neighbor_rows:
        r["known"] = r.get("known", False) and well_posed(r) and not _mentions(_qa(r), target_keys)
    check_stable(model, tokenizer, neighbor_rows)
    neighbors, used = [], []
    for entity in entities:
        facts = _dedupe([r for r in neighbor_rows if r["entity"] == entity and r["known"]])[:MAX_FACTS_PER_NEIGHBOR]
        if facts:
            used.append(entity)
        neighbors += facts
        if len(used) >= MAX_NEIGHBOR_ENTITIES:
            break
    forget, heldout = _split([_fact(r) for r in known])
    kept, kept_heldout = _split([_fact(r) for r in neighbors], by_fact=True, cover=_forms(forget))
    return TargetSets(
        request,
        forget,
        heldout,
        kept,
        kept_heldout,
        list(retain) if retain is not None else demo_rows("retain"),
        passages(model, tokenizer, request),
        probe=probe + neighbor_rows,
        neighbor_entities=used,
    )


# ---- files and cache --------------------------------------------------------------------------------------------


def write_sets(sets: TargetSets, where: Path, model_fingerprint: str) -> None:
    """`where/{forget,heldout,neighbors,neighbors_heldout,retain,passages}.jsonl`, `probe.json` and `request.json`
    (last)."""
    where.mkdir(parents=True, exist_ok=True)
    for name, rows in sets.sets().items():
        write_jsonl(where / f"{name}.jsonl", rows)
    write_atomic(where / "probe.json", json.dumps(sets.probe, indent=1))
    record = {
        "request": asdict(sets.request),
        "model_fingerprint": model_fingerprint,
        "probe_version": PROBE_VERSION,
        "summary": sets.summary(),
    }
    write_atomic(where / REQUEST_FILE, json.dumps(record, indent=2))


def read_sets(where: Path) -> TargetSets | None:
    try:
        record = json.loads((where / REQUEST_FILE).read_text())
        rows = {n: [json.loads(x) for x in (where / f"{n}.jsonl").read_text().splitlines() if x] for n in SET_NAMES}
        probe = json.loads((where / "probe.json").read_text())
    except (OSError, ValueError):
        return None
    if record.get("probe_version") != PROBE_VERSION:
        return None
    request = Request(**record["request"])
    return TargetSets(request, **rows, probe=probe, neighbor_entities=record["summary"]["neighbor_entities"])


def cache_path(request: Request, model_fingerprint: str) -> Path:
    from .models import cache_dir

    return cache_dir() / "targets" / f"{model_fingerprint}-{request.slug()}"


def prepare(model, tokenizer, request: Request, out: Path | None = None, cache: bool = True) -> TargetSets:
    """The sets for `request` on `model`: from the cache when this model and target were probed before, else built
    (and cached); copied into `out` when given."""
    from .evaluation.runner import model_fingerprint

    fp = model_fingerprint(model)
    cached = cache_path(request, fp)
    sets = read_sets(cached) if cache else None
    if sets is not None and sets.request.target == request.target and sets.request.scope == request.scope:
        sets.request = request
    else:
        sets = build_sets(model, tokenizer, request)
        if cache:
            write_sets(sets, cached, fp)
    known = len(sets.forget) + len(sets.heldout)
    if known < MIN_KNOWN:
        raise UnlearnError(
            f"The model knows only {known} facts about {request.describe()} (of {sets.summary()['probed']} "
            f"questions; its own answer at least {KEY_MARGIN} nats likelier than swapped names, its key term at "
            f"least {KEY_CONFIDENCE} likely per token); at least "
            f"{MIN_KNOWN} are needed to train on some and measure the rest. Check the spelling, widen the scope, "
            "or give a forget set instead (`forget=PATH`)."
        )
    if out is not None:
        write_sets(sets, out, fp)
    return sets


# ---- the run ----------------------------------------------------------------------------------------------------


def _stated(model, tokenizer, sets: dict[str, list[dict]]) -> dict[str, Any]:
    """`demo.measure` on the sets, with the fraction of each set's facts still known (`still_known`)."""
    from .demo import measure

    measured = measure(model, tokenizer, {n: rows for n, rows in sets.items() if rows})
    known = {n: still_known(model, tokenizer, rows) for n, rows in sets.items() if n != "retain"}
    measured["known"] = {n: statistics.fmean(k.values()) for n, k in known.items() if k}
    measured["known_rows"] = {q: v for k in known.values() for q, v in k.items()}
    return measured


def report(
    sets: TargetSets,
    before: dict,
    after: dict,
    attacks: list[dict] | None,
    minutes: float,
    epochs: list[tuple[float, float]] | None = None,
) -> str:
    from .demo import STATED_TOKENS

    summary = sets.summary()
    lines = [
        f"# Forgetting {sets.request.describe()}",
        "",
        f"Probed {summary['probed']} questions; {summary['known']} facts known (the model's answer at "
        f"least {KEY_MARGIN} nats likelier than with its key term swapped, the key term at least {KEY_CONFIDENCE} "
        "likely per token where the answer puts it). Neighbors from: "
        f"{', '.join(sets.neighbor_entities) or 'none'}. Every {HELD_OUT_EVERY}rd fact held out of training (a "
        "neighbor fact asked two ways on one side).",
        "",
        "| set | rows | stated before | stated after | known before | known after | answer NLL before | after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    shown = {
        "forget": ("forget", sets.forget),
        "heldout": ("heldout", sets.heldout),
        "neighbors": ("neighbors (held out)", sets.neighbors_heldout),
        "neighbors_trained": ("neighbors (in retain)", sets.neighbors),
        "retain": ("retain", sets.retain),
    }
    for name, (label, rows) in shown.items():
        if name in before["stated"]:
            known = [f"{m['known'][name]:.2f}" if name in m.get("known", {}) else "-" for m in (before, after)]
            lines.append(
                f"| {label} | {len(rows)} | {before['stated'][name]:.2f} | {after['stated'][name]:.2f} | "
                f"{known[0]} | {known[1]} | {before['nll'][name]:.2f} | {after['nll'][name]:.2f} |"
            )
    lines += [
        "",
        f"stated: the fraction of greedy answers ({STATED_TOKENS} tokens) that contain the fact's key term. known: "
        "the fraction that still pass the knowledge check (the model's answer likelier than with its key term "
        "swapped, the key term confident): a fact no longer stated but still known is hidden, not erased.",
        "",
    ]
    if epochs:
        fractions = ", ".join(f"{f:.2f}" for _, f in epochs)
        lines += [f"Trained {epochs[-1][0]:g} epochs; trained facts stated after each: {fractions}.", ""]
    if attacks:
        lines += ["| attack | recovered | summary |", "|---|---|---|"]
        lines += [f"| {a['attack']} | {a['recovered_fraction']:.2f} | {a['summary']} |" for a in attacks]
        lines.append("")
    new = {r["question"] for r in sets.new_facts()}
    intro = [f"{len(new)} of {len(sets.heldout)} state a key no trained row states (marked *new fact*).", ""]
    listed = (
        ("Held-out answers", sets.heldout, new, intro),
        ("Held-out neighbor answers", sets.neighbors_heldout, set(), []),
    )
    for title, rows, marked, said_first in listed:
        lines += [f"## {title}, before -> after", "", *said_first]
        for r in rows:
            q = r["question"]
            before_answer, after_answer = before["all_answers"][q], after["all_answers"][q]
            known = after.get("known_rows", {}).get(q)
            still = "" if known is None else f" (still known: {'yes' if known else 'no'})"
            mark = " *new fact*" if q in marked else ""
            lines.append(f"- {q} (`{' / '.join(r['key'])}`){mark}: {before_answer!r} -> {after_answer!r}{still}")
        lines.append("")
    lines += [f"{minutes:.1f} minutes in all (probe, unlearning, evaluation, attacks).", ""]
    return "\n".join(lines)


class StopWhenForgotten(TrainerCallback):
    """A Trainer callback: ends training at the first epoch after which at most `at_most` of the trained `facts`
    are stated (`demo.states` on their greedy answers), and records the fraction after each epoch (`epochs`). Every
    step after the facts are gone only moves the model further from where it was, which the neighbors pay for."""

    def __init__(self, tokenizer, facts: list[dict], at_most: float = 0.0):
        self.tokenizer, self.facts, self.at_most = tokenizer, facts, at_most
        self.epochs: list[tuple[float, float]] = []  # (epoch, stated fraction of the trained facts)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        from .demo import STATED_TOKENS, stated_fraction
        from .scoring import greedy_answers

        questions = [f["question"] for f in self.facts]
        said = greedy_answers(model, self.tokenizer, questions, max_new_tokens=STATED_TOKENS)
        stated = stated_fraction(dict(zip(questions, said, strict=True)), self.facts)
        self.epochs.append((round(state.epoch, 2), stated))
        if stated <= self.at_most:
            control.should_training_stop = True


@dataclass
class TargetResult:
    model: Any
    sets: TargetSets
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    attacks: list[dict] | None = None
    epochs: list[tuple[float, float]] | None = None  # (epoch, trained facts stated) at each epoch's end


DEFAULT_ATTACKS = ("relearn", "quantize")
# The demo recipe's settings for a target run (recipes/target.yaml holds the same): LoRA on the MLPs of the first
# half of the layers only, at lr 3e-3. On the five SmolLM2 targets' version 19 sets (benchmarks/results/
# targets_smollm2/) against the MLPs of every layer at 1.5e-3: held-out facts stated 0/37 in both, held-out neighbors
# stated 27/36 vs 24/36, relearned 0.16-0.44 vs 0.11-0.47, whole flows probing afresh 8.7 vs 11.3 minutes. At 1.5e-3
# the half-depth adapter kept 30/36 neighbors but forgot less deeply (2/37 held-out facts stated, relearned up to
# 0.59).
TARGET_SETTINGS: dict[str, Any] = {
    "learning_rate": 3e-3,
    "lora_target_modules": ["gate_proj", "up_proj", "down_proj"],
    "lora_layers": "50%",
}


def forget_target(
    model,
    tokenizer,
    target: str | None = None,
    request: str | None = None,
    recipe: str | None = None,
    output_dir: str | Path | None = None,
    dry_run: bool = False,
    attacks: tuple[str, ...] | list[str] = DEFAULT_ATTACKS,
    config=None,
    stop_when_forgotten: bool = False,
    **overrides: Any,
) -> TargetResult:
    """Probe, build the sets into `output_dir/target/`, unlearn them with `recipe`, measure and attack.

    `recipe` defaults to the demo's (IdkDPO with answer preservation, at the demo's settings with `TARGET_SETTINGS`,
    as recipes/target.yaml); `overrides` are its config keys. Without `output_dir`, nothing is saved. `config` (an
    already built `UnlearnConfig`, the CLI's) replaces recipe and overrides. With `dry_run`, stops once the sets are
    written and returns the model untouched. With `stop_when_forgotten`, training ends at the first epoch after
    which none of the trained facts is stated (`StopWhenForgotten`): on SmolLM2 it saved a third of the time where
    it stopped early and kept Harry Potter's neighbors better, but left more held-out Star Wars facts stated (2 of 5
    instead of 1), so it is not the default (benchmarks/results/targets_smollm2/README.md)."""
    import tempfile
    import time

    from .demo import DEMO_ATTACKS, DEMO_RECIPE, DEMO_SETTINGS, RECIPE_SETTINGS

    started = time.time()
    req = resolve_request(target, request)
    tmp = None
    if output_dir is None and config is None:
        tmp = tempfile.TemporaryDirectory(prefix="unlearn-target-")
        output_dir = tmp.name
    out = Path(config.output_dir if config is not None else output_dir)
    sets = prepare(model, tokenizer, req, out / TARGET_DIR)
    print(
        f"Forgetting {req.describe()}: {len(sets.forget)} facts to train on, {len(sets.heldout)} held out, "
        f"{len(sets.neighbors) + len(sets.neighbors_heldout)} neighbor facts ({', '.join(sets.neighbor_entities)}), "
        f"{len(sets.retain)} retain rows, {len(sets.passages)} passages; written to {out / TARGET_DIR}",
        flush=True,
    )
    if dry_run:
        return TargetResult(model, sets)
    # Measured: the facts trained on, the held-out ones, the held-out neighbors (the others are retain data).
    evaluated = {
        "forget": sets.forget,
        "heldout": sets.heldout,
        "neighbors": sets.neighbors_heldout,
        "neighbors_trained": sets.neighbors,
        "retain": sets.retain,
    }
    before = _stated(model, tokenizer, evaluated)
    forget_path, retain_path = out / TARGET_DIR / "train_forget.jsonl", out / TARGET_DIR / "train_retain.jsonl"
    train_forget = sets.forget + sets.passages
    write_jsonl(forget_path, train_forget)
    train_retain = sets.retain + sets.neighbors  # the neighbors not held out are kept by training on them
    write_jsonl(retain_path, train_retain)
    if config is None:
        from .config import build_config
        from .recipes import get_recipe

        name = recipe or DEMO_RECIPE
        settings = {**DEMO_SETTINGS, **RECIPE_SETTINGS[name], **TARGET_SETTINGS} if name == DEMO_RECIPE else {}
        values = {"recipe": name, **settings, **overrides, "output_dir": str(out)}
        if tmp is not None:
            values["save_strategy"] = "no"
        config = build_config(values, get_recipe(name).config_class)
    from .run import run

    config.forget, config.retain = str(forget_path), str(retain_path)
    config.target, config.request = req.target, req.text
    stop = StopWhenForgotten(tokenizer, sets.forget) if stop_when_forgotten else None
    callbacks = [stop] if stop is not None else None
    unlearned = run(config, model, tokenizer, train_forget, train_retain, save=tmp is None, callbacks=callbacks)
    epochs = stop.epochs if stop is not None else None
    after = _stated(unlearned, tokenizer, evaluated)
    rows = None
    if attacks:
        from .attacks import attack

        options = {**DEMO_ATTACKS, "generate": False}  # probability only: the recovered fraction reads nothing else
        rows = []
        for name in attacks:
            found = attack(unlearned, tokenizer, name, forget=sets.forget + sets.heldout, retain=sets.retain, **options)
            rows += [r.row() for r in (found if isinstance(found, list) else [found])]
    result = TargetResult(unlearned, sets, before, after, rows, epochs)
    minutes = (time.time() - started) / 60
    if tmp is None:
        record = {"summary": sets.summary(), "before": before, "after": after, "attacks": rows, "minutes": minutes}
        record |= {"epochs": epochs}  # (epoch, trained facts stated) with `stop_when_forgotten`, else None
        write_atomic(out / TARGET_DIR / "result.json", json.dumps(record, indent=2, default=float))
        write_atomic(out / TARGET_DIR / "REPORT.md", report(sets, before, after, rows, minutes, epochs))
    else:
        tmp.cleanup()
    return result
