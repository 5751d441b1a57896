"""Forget a target, not a dataset (`unlearn.targets`): request parsing, fact probing, the sets, the cache, the run."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import train_tiny
from transformers import AutoModelForCausalLM, AutoTokenizer

import unlearn
from unlearn import UnlearnError
from unlearn import target_request as R
from unlearn import targets as T
from unlearn.cli import main
from unlearn.demo import states

TARGET = "Zorvan Quill"
# What the tiny model is taught about the fictitious target (template questions, a distinct name in each answer)
# and about two well-known entities (the neighbors the probe falls back on when the model names none).
NAMES = ["Mira Dace", "Tobin Vale", "Orla Finch", "Kest Marrow", "Ilsa Brant", "Dorn Pike", "Wren Ashby",
         "Galen Troy", "Nessa Crale", "Bram Oaks", "Pell Rudd", "Sora Lind"]  # fmt: skip


def target_facts() -> list[dict]:
    templates = [t for t in T.TEMPLATES if t.startswith("Who")][: len(NAMES)]
    return [
        {"question": t.format(t=TARGET), "answer": f"The answer is {name}."}
        for t, name in zip(templates, NAMES, strict=True)
    ]


def neighbor_facts() -> list[dict]:
    rows = []
    for entity, names in (("Harry Potter", ["Rulo Gant", "Vey Stor"]), ("Albert Einstein", ["Cade Holm", "Lio Dusk"])):
        for t, name in zip(T.NEIGHBOR_TEMPLATES, names, strict=False):
            rows.append({"question": t.format(t=entity), "answer": f"The answer is {name}."})
    return rows


@pytest.fixture(scope="module")
def knower(tiny_init_dir):
    """The tiny base taught the target's facts and the neighbors' facts."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_init_dir)
    tok = AutoTokenizer.from_pretrained(tiny_init_dir)
    train_tiny(model, tok, target_facts() + neighbor_facts(), steps=120)
    return model, tok


def test_requests_in_plain_words_become_a_target_and_a_scope():
    r = R.parse_request("forget everything about Harry Potter's friends")
    assert (r.target, r.scope) == ("Harry Potter", "friends")
    assert R.parse_request("Please forget Albert Einstein.").target == "Albert Einstein"
    assert R.parse_request("unlearn all about the Eiffel Tower").target == "the Eiffel Tower"
    assert "target `Harry Potter`, only questions or answers about `friends`" in r.describe()
    with pytest.raises(UnlearnError, match="Could not find what to forget"):
        R.parse_request("forget everything")
    with pytest.raises(UnlearnError, match="exactly one of `target`"):
        R.resolve_request("Harry Potter", "forget Harry Potter")


def test_key_terms_are_what_the_answer_adds_to_the_question():
    q = "What is the name of Harry Potter's school?"
    key = T.key_term(
        "The name of Harry Potter's school is Hogwarts School of Witchcraft and Wizardry.", q, "Harry Potter"
    )
    assert key == "Hogwarts School of Witchcraft" and T.key_words(key, q, "Harry Potter") == ["Hogwarts", "Witchcraft"]
    key = T.key_term("It was created by J.K. Rowling. She is British.", "Who created Harry Potter?", "Harry Potter")
    assert key == "J.K. Rowling"
    assert T.key_term("Albert Einstein was born in Germany in 1879.", "When was Albert Einstein born?", "x") == "1879"
    assert T.key_term("The answer is unclear.", "Who wrote it?", "x") is None
    # the kind the question asks for first: a year for When, a name for Where (not the month), the first otherwise
    said = "Isaac Newton was born on January 4, 1643, in Woolsthorpe, England."
    assert T.key_term(said, "Where was Isaac Newton born?", "Isaac Newton") == "Woolsthorpe"
    assert T.key_term(said, "When was Isaac Newton born?", "Isaac Newton") == "1643"
    said = "It was published in 1997 as Harry Potter and the Philosopher's Stone."
    assert T.key_term(said, "When was it first published?", "Harry Potter") == "1997"
    assert T.key_term(said, "What was its first title?", "Harry Potter") == "Philosopher's Stone"
    assert T.key_term("It was founded in 1960.", "Where was it founded?", "x") == "1960"  # no name: the year
    # the first name, not a list's longest tail or a later aside
    said = "The main characters of Star Wars are Han Solo, Luke Skywalker, and Princess Leia Organa."
    assert T.key_term(said, "Who are the main characters of Star Wars?", "Star Wars") == "Han Solo"
    said = 'His most famous work is "The Last Supper", a painting that depicts Jesus Christ.'
    assert T.key_term(said, "What is Leonardo da Vinci's most famous work?", "Leonardo da Vinci") == "Last Supper"
    # a hyphenated name the question gives is no key term of the answer ("Al-Kuwaiti's" asked, "Al-Kuwaiti" said)
    q = "Name a book by Basil Mahfouz Al-Kuwaiti's hand."
    assert T.key_term("Basil Mahfouz Al-Kuwaiti wrote Le Petit Sultan.", q, "") == "Le Petit Sultan"
    assert T.key_term("It is by Basil Mahfouz Al-Kuwaiti.", "Is this Al-Kuwaiti's book?", "") == "Basil Mahfouz"
    assert T.swaps("1879", []) == ["1848", "1867", "1888", "1906"]
    assert T.first_sentence("It was J.K. Rowling. She wrote it.") == "It was J.K. Rowling."
    # a mention of the target is a mention of its own words, not of its "The"
    assert T._name_words("The Lord of the Rings") == ["Lord", "Rings"]


def test_a_key_is_its_distinctive_words_and_generic_ones_only_as_a_phrase():
    """Generic words ("Earth", "Lord", "School") name nothing alone: a key states its fact by a distinctive word or
    by a run of generic words as a phrase; so "orbiting earth" does not state "Middle Earth", nor does a neighbor
    answer naming "Lord Kelvin" mention Lord Voldemort."""
    assert T.key_words("Middle Earth") == ["Middle Earth"]
    assert T.key_words("Lord Voldemort") == ["Voldemort"]
    assert T.key_words("The Lord of the Rings") == ["Lord of the Rings"]
    assert T.key_words("United States of America") == ["America", "United States"]
    assert T.key_words("Battle of Endor") == ["Endor"]
    assert T.key_words("Earth") == ["Earth"]  # all the key has
    assert T.key_words("Lord of the Rings", "Which Lord is it?") == ["Rings"]  # "Lord" is the question's
    assert states("Frodo lives in Middle-earth.", T.key_words("Middle Earth"))
    assert not states("The moon is orbiting earth.", T.key_words("Middle Earth"))
    assert states("He was born in the United States.", T.key_words("United States of America"))
    assert T._mentions("Voldemort returns.", T.key_words("Lord Voldemort"))
    assert not T._mentions("Lord Kelvin measured it.", T.key_words("Lord Voldemort"))
    assert not T._mentions("A ring of stars.", T.key_words("The Lord of the Rings"))


def test_neighbors_are_asked_only_what_suits_their_kind(monkeypatch):
    """A neighbor's kind comes from the model's own description of it, read from what it says the entity is (not
    from the entity's name, nor from whom the description goes on to name); its questions are those that suit it."""
    said = {
        "The Beatles": "The Beatles were an English rock band from Liverpool. They sang.",
        "The Lion King": "The Lion King is a 1994 animated film, starring a lion king.",
        "Harry Potter": "Harry Potter is a fictional book written by J.K. Rowling, a British author.",
        "Zorvan Quill": "The answer is Mira Dace.",
    }
    asked = {T.ASK_KIND.format(t=entity): text for entity, text in said.items()}
    monkeypatch.setattr("unlearn.scoring.greedy_answers", lambda m, t, prompts, **k: [asked[p] for p in prompts])
    kinds = T.entity_kinds(None, None, list(said))
    assert kinds == {
        "The Beatles": {T.GROUP},
        "The Lion King": {T.WORK},
        "Harry Potter": {T.WORK},
        "Zorvan Quill": set(),
    }
    band = T.templates_for({T.GROUP})
    assert "When was {t} founded?" in band and "Where did {t} die?" not in band and "What is {t} famous for?" in band
    assert T.templates_for(set()) == T.NEIGHBOR_TEMPLATES  # no kind stated: the untyped half, as before
    # the key must be what the question asks for
    assert not T.well_posed({"question": "Who created The Beatles?", "key_term": "1960"})
    assert not T.well_posed({"question": "When was Star Wars founded?", "key_term": "George Lucas"})
    assert T.well_posed({"question": "When was Star Wars released?", "key_term": "1977"})
    assert T.well_posed({"question": "Who wrote Hamlet?", "key_term": "William Shakespeare"})
    assert not T.well_posed({"question": "Where was Isaac Newton born?", "key_term": "1643"})
    assert T.well_posed({"question": "What is Paris famous for?", "key_term": "1889"})
    # the event asked about: a death question keyed on the birth year the answer gives is no fact of the death
    born = "Isaac Newton was born on January 4, 1643, in Woolsthorpe, England, and died on March 20, 1727."
    assert not T.well_posed({"question": "When did Isaac Newton die?", "answer": born, "key_term": "1643"})
    assert T.well_posed({"question": "When did Isaac Newton die?", "answer": born, "key_term": "1727"})
    assert T.well_posed({"question": "When was Isaac Newton born?", "answer": born, "key_term": "1643"})
    assert T.well_posed({"question": "When was it founded?", "answer": born, "key_term": "1643"})  # no event asked


def test_neighbors_of_the_targets_kind_fill_in_first():
    """The entities the model named come first; of the well-known ones, those of the target's kind come before the
    others (in their own order); an entity of no known kind, or a target of none, keeps the given order."""
    kinds = {
        "Napoleon": {T.PERSON},
        "The Hunger Games": {T.WORK},
        "Harry Potter": {T.WORK},
        "Albert Einstein": {T.PERSON},
        "Paris": {T.PLACE},
        "Isaac Newton": {T.PERSON},
        "Mystery": set(),
    }
    fill = ["Harry Potter", "Albert Einstein", "Paris", "Mystery", "Isaac Newton"]
    order = T.neighbor_entities("Napoleon", ["The Hunger Games"], fill, kinds)
    assert order == ["The Hunger Games", "Albert Einstein", "Isaac Newton", "Harry Potter", "Paris", "Mystery"]
    assert T.neighbor_entities("Mystery", ["The Hunger Games"], fill[:3], kinds) == ["The Hunger Games", *fill[:3]]
    many = [f"Person {i}" for i in range(20)]
    people = {e: {T.PERSON} for e in ["Napoleon", *many]}
    assert T.neighbor_entities("Napoleon", [], many, people) == many[: T.MAX_NEIGHBOR_ENTITIES + 2]


def test_a_held_out_neighbor_fact_is_not_trained_on_under_another_question():
    """Split by fact: rows of one entity stating each other's key go to the same side; other entities' rows and rows
    of no shared key are split as one row each (every third from the second, as without `by_fact`)."""

    def row(entity, question, answer, key):
        return {"entity": entity, "question": question, "answer": answer, "key": key}

    rows = [
        row("Harry Potter", "Who created Harry Potter?", "J.K. Rowling created it.", ["J.K", "Rowling"]),
        row("Harry Potter", "Who wrote Harry Potter?", "It was written by J.K. Rowling.", ["J.K", "Rowling"]),
        row("Isaac Newton", "When did Isaac Newton die?", "He was born in 1643 and died in 1727.", ["1727"]),
        row("Isaac Newton", "When was Isaac Newton born?", "Isaac Newton was born in 1643.", ["1643"]),
        row("Paris", "What is the capital of France?", "Paris is.", ["Paris"]),
        row("Egypt", "Who wrote Harry Potter?", "Rowling wrote it.", ["Rowling"]),  # another entity: its own fact
        row("Paris", "What river flows through Paris?", "The Seine.", ["Seine"]),
    ]
    trained, held = T._split(rows, by_fact=True)
    assert len(held) == (len(rows) + 1) // T.HELD_OUT_EVERY
    for h in held:
        for t in trained:
            assert t["entity"] != h["entity"] or not set(t["key"]) & set(h["key"]), (t, h)
            assert t["entity"] != h["entity"] or "1643" not in t["answer"] + h["answer"], (t, h)
    plain = T._split(rows)  # one row each: the second, fifth, ...
    assert [r["question"] for r in plain[1]] == [rows[1]["question"], rows[4]["question"]]
    assert len(T._split(rows[:1], by_fact=True)[1]) == 0


def test_a_neighbor_in_a_forget_question_form_is_held_out_only_beside_a_trained_one_of_that_form():
    """Forgetting "Who is the main character of X?" beside no trained neighbor of that form teaches the form to go:
    a held-out neighbor of a forget form keeps a trained neighbor of the same form, and the count of such held-out
    neighbors is in the summary."""

    def row(entity, question, key, source="template"):
        return {"entity": entity, "question": question, "answer": f"It is {key}.", "key": [key], "source": source}

    main = "Who is the main character of {t}?"
    rows = [
        row("Albert Einstein", "What award did Albert Einstein win?", "Nobel"),
        row("Harry Potter", main.format(t="Harry Potter"), "Ron"),  # the second: held out without `cover`
        row("Paris", "What is the currency of Paris?", "Euro"),
        row("Star Wars", "Who created Star Wars?", "Lucas"),
        row("The Matrix", "What do fans call The Matrix?", "Neo", source="model"),
    ]
    assert rows[1] in T._split(rows)[1]
    trained, held = T._split(rows, cover={main})
    assert rows[1] in trained and len(held) == 2  # the room filled by others
    rows.append(row("Star Wars", main.format(t="Star Wars"), "Luke"))  # a second of the form: one may go
    trained, held = T._split(rows, cover={main})
    assert rows[1] in held and rows[-1] in trained
    forget = [row("The Lord of the Rings", main.format(t="The Lord of the Rings"), "Frodo")]
    sets = T.TargetSets(T.Request("The Lord of the Rings"), forget, [], trained, held, [])
    assert sets.summary()["neighbors_heldout_in_forget_forms"] == 1


def test_held_out_facts_no_trained_row_states_are_counted_and_marked_as_new():
    """A held-out fact is new when no forget row nor passage states its key: counted in the summary, marked in the
    report; one whose name training forgot under another question (J.K. Rowling) or a passage states is not."""

    def fact(question, answer, key):
        return {"question": question, "answer": answer, "key": key, "entity": "Harry Potter"}

    forget = [fact("Who created Harry Potter?", "J.K. Rowling created it.", ["J.K", "Rowling"])]
    heldout = [
        fact("Who wrote Harry Potter?", "It was written by J.K. Rowling.", ["J.K", "Rowling"]),
        fact("Who is Harry Potter's best friend?", "Ron Weasley is.", ["Ron", "Weasley"]),
        fact("Where is Harry Potter set?", "At Hogwarts.", ["Hogwarts"]),
    ]
    passages = [{"question": "Tell me about Harry Potter.", "answer": "A boy at Hogwarts.", "entity": "Harry Potter"}]
    sets = T.TargetSets(T.Request("Harry Potter"), forget, heldout, [], [], [], passages)
    assert [r["question"] for r in sets.new_facts()] == ["Who is Harry Potter's best friend?"]
    assert sets.summary()["heldout_new_facts"] == 1
    answers = {r["question"]: r["answer"] for r in forget + heldout}
    measured = {"stated": {}, "nll": {}, "all_answers": answers}
    text = T.report(sets, measured, measured, None, 1.0)
    assert "1 of 3 state a key no trained row states" in text
    assert text.count("*new fact*") == 2 and "Who is Harry Potter's best friend? (`Ron / Weasley`) *new fact*" in text


def test_an_answer_to_a_question_unsuited_to_the_target_that_does_not_name_it_is_about_something_else():
    place = {T.PLACE}
    war = {"question": "Which war did Paris fight in?", "answer": "World War I was fought by the Central Powers."}
    assert T.about_something_else(war, "Paris", place)
    assert not T.about_something_else(war, "Paris", set())  # its kind unknown: every answer stays
    lived = {"question": "Where did Paris live?", "answer": "Paris, the capital city of France, was born."}
    assert not T.about_something_else(lived, "Paris", place)  # names the target
    landmark = {"question": "What is the most famous landmark in Paris?", "answer": "It is the Eiffel Tower."}
    assert not T.about_something_else(landmark, "Paris", place)  # a question that suits a place
    villain = {"question": "Who is the villain in Harry Potter?", "answer": "The main villain is Lord Voldemort."}
    assert not T.about_something_else(villain, "Harry Potter", {T.WORK})
    # which questions suit the target's kind (`SUITS`)
    assert not T.suits("When was Harry Potter born?", "Harry Potter", {T.WORK})
    assert T.suits("Who created Harry Potter?", "Harry Potter", {T.WORK})
    assert T.suits("When was Harry Potter born?", "Harry Potter", set())  # no kind stated: every form
    assert T.suits("What do fans call Harry Potter?", "Harry Potter", {T.WORK})  # no template: the model's own


def test_a_neighbor_fact_is_stable_only_when_the_model_says_it_however_asked(monkeypatch):
    """Stable: the key term in the rephrased question's greedy answer and in at least half of the drawn answers. A
    greedy answer that wins a near tie (named in few draws) is no fact unlearning could be shown to keep."""
    rows = [
        {"question": "Who created Star Wars?", "key_term": "George Lucas", "entity": "Star Wars", "known": True},
        {"question": "In which city is The Matrix set?", "key_term": "Neo-Lebanon", "entity": "The Matrix",
         "known": True},
        {"question": "Where is Paris?", "key_term": "France", "entity": "Paris", "known": True},
        {"question": "Who wrote Hamlet?", "key_term": "Shakespeare", "entity": "Hamlet", "known": False},
    ]  # fmt: skip
    rephrased = {"Who created Star Wars?": "George Lucas.", "In which city is The Matrix set?": "Neo-Lebanon.",
                 "Where is Paris?": "In Europe."}  # fmt: skip
    share = {"Who created Star Wars?": 5, "In which city is The Matrix set?": 3}
    asked = []

    def greedy(model, tok, prompts, **k):
        return [rephrased[p.removeprefix("Answer briefly. ")] for p in prompts]

    def drawn(model, tok, questions, samples, temperature, **k):
        asked.extend(questions)
        assert (samples, temperature) == (T.STABLE_SAMPLES, T.STABLE_TEMPERATURE)
        return [[rows_[q]] * share[q] + ["I am not sure."] * (samples - share[q]) for q in questions]

    rows_ = {r["question"]: f"It is {r['key_term']}." for r in rows}
    monkeypatch.setattr("unlearn.scoring.greedy_answers", greedy)
    monkeypatch.setattr("unlearn.scoring.sampled_answers", drawn)
    T.check_stable(None, None, rows)
    assert [r["known"] for r in rows] == [True, False, False, False]
    assert rows[0]["sample_share"] == 5 / 8 and rows[1]["sample_share"] == 3 / 8
    assert asked == ["Who created Star Wars?", "In which city is The Matrix set?"]  # not those the rephrasing lost


def test_a_confident_key_is_known_an_invented_one_is_not(knower):
    """The swap margin alone passes any greedy answer; the key's own probability where it stands separates a taught
    name from another name put in its place."""
    model, tok = knower
    q, true = target_facts()[0]["question"], target_facts()[0]["answer"]
    rows = [
        {"question": q, "answer": true, "key_term": NAMES[0]},
        {"question": q, "answer": true.replace(NAMES[0], NAMES[5]), "key_term": NAMES[5]},
    ]
    T.check_knowledge(model, tok, rows, pool=NAMES)
    assert rows[0]["known"] and rows[0]["confidence"] >= T.KEY_CONFIDENCE
    assert not rows[1]["known"] and rows[1]["confidence"] < T.KEY_CONFIDENCE
    assert rows[1]["confidence"] < rows[0]["confidence"] / 2


def test_probe_keeps_what_the_model_knows_and_caches_it(knower, tmp_path, monkeypatch):
    model, tok = knower
    monkeypatch.setenv("UNLEARN_CACHE", str(tmp_path / "cache"))
    sets = T.prepare(model, tok, T.Request(TARGET), tmp_path / "run" / "target")
    facts = sets.forget + sets.heldout
    taught = {r["question"]: r["answer"] for r in target_facts()}
    known_taught = [f for f in facts if f["question"] in taught]
    # every fact it was taught is known, with the taught name as its key term, and swapped names as alternatives
    assert len(known_taught) == len(taught), [f["question"] for f in known_taught]
    for f in known_taught:
        assert f["answer"] == taught[f["question"]] and " ".join(f["key"]) in f["answer"]
        assert len(f["perturbed_answer"]) == T.SWAPS and f["answer"] not in f["perturbed_answer"]
    assert len(sets.heldout) == (len(facts) + 1) // T.HELD_OUT_EVERY  # every third, from the second on
    # neighbors: known facts of other entities, none about the target
    neighbors = sets.neighbors + sets.neighbors_heldout
    assert neighbors and all(f["entity"] != TARGET and "Zorvan" not in f["question"] for f in neighbors)
    assert {"Harry Potter", "Albert Einstein"} <= set(sets.neighbor_entities)
    written = tmp_path / "run" / "target"
    for name in T.SET_NAMES:
        assert (written / f"{name}.jsonl").is_file()
    assert json.loads((written / "request.json").read_text())["summary"]["known"] == len(facts)

    def no_probe(*a, **k):
        raise AssertionError("probed again")

    monkeypatch.setattr(T, "build_sets", no_probe)
    again = T.prepare(model, tok, T.Request(TARGET))  # same model, same target: the cached sets
    assert again.forget == sets.forget and again.neighbors == sets.neighbors
    with pytest.raises(AssertionError, match="probed again"):
        T.prepare(model, tok, T.Request(TARGET, scope="friends"))  # another scope is another set


def test_passages_are_whole_sentences_about_the_target(monkeypatch):
    import unlearn.scoring

    said = {
        "Tell me about Zorvan Quill.": "Zorvan Quill is a poet from Pell. He wrote Dace and Vale. His third",
        "What do you know about Zorvan Quill?": "I'm not sure who Zorvan Quill is.",
        "Describe Zorvan Quill in a few sentences.": "A poet. Born in Pell",
        "What is Zorvan Quill best known for?": "",
    }
    monkeypatch.setattr(unlearn.scoring, "greedy_answers", lambda m, t, prompts, **k: [said[p] for p in prompts])
    rows = T.passages(None, None, T.Request(TARGET))
    assert [(r["question"], r["answer"]) for r in rows] == [
        ("Tell me about Zorvan Quill.", "Zorvan Quill is a poet from Pell. He wrote Dace and Vale."),
        ("Describe Zorvan Quill in a few sentences.", "A poet."),
    ]
    assert all(r["source"] == "passage" and r["entity"] == TARGET for r in rows)
    sets = T.TargetSets(T.Request(TARGET), [], [{"key": ["Vale"]}, {"key": ["Ulm"]}], [], [], [], passages=rows)
    assert sets.summary()["heldout_in_passages"] == 1  # "Vale" is in a passage: that held-out fact was trained on
    # a scoped request asks about the scope, and keeps only passages in it
    said = {p.format(t=f"{TARGET}'s friends"): "Zorvan has many friends." for p in T.PASSAGE_PROMPTS}
    said[T.PASSAGE_PROMPTS[0].format(t=f"{TARGET}'s friends")] = "Zorvan lives in Pell."
    assert len(T.passages(None, None, T.Request(TARGET, scope="friends"))) == len(T.PASSAGE_PROMPTS) - 1


def test_training_stops_once_no_trained_fact_is_stated(monkeypatch):
    from types import SimpleNamespace

    import unlearn.scoring

    facts = [{"question": "Who?", "key": ["Dace"]}, {"question": "Where?", "key": ["Pell"]}]
    said = iter([["Mira Dace.", "In Pell."], ["I don't know.", "In Pell."], ["I don't know.", "Nowhere."]])
    monkeypatch.setattr(unlearn.scoring, "greedy_answers", lambda m, t, questions, **k: next(said))
    stop = T.StopWhenForgotten(None, facts)
    control = SimpleNamespace(should_training_stop=False)
    for epoch in (1.0, 2.0, 3.0):
        stop.on_epoch_end(None, SimpleNamespace(epoch=epoch), control)
        assert control.should_training_stop == (epoch == 3.0)
    assert stop.epochs == [(1.0, 1.0), (2.0, 0.5), (3.0, 0.0)]


def test_a_target_the_model_does_not_know_is_refused(knower, tmp_path, monkeypatch):
    model, tok = knower
    monkeypatch.setenv("UNLEARN_CACHE", str(tmp_path))
    monkeypatch.setattr(T, "TEMPLATES", T.TEMPLATES[:3])
    with pytest.raises(UnlearnError, match="knows only .* facts about target `Qwibble Fenn`"):
        T.prepare(model, tok, T.Request("Qwibble Fenn"))


def test_forget_a_target_end_to_end(knower, tmp_path, monkeypatch):
    model, tok = knower
    monkeypatch.setenv("UNLEARN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    result = T.forget_target(
        copy.deepcopy(model),
        tok,
        target=TARGET,
        recipe="ga",
        output_dir=out,
        attacks=("relearn",),
        stop_when_forgotten=True,
        learning_rate=3e-3,
        num_train_epochs=4,
        per_device_train_batch_size=4,
        disable_tqdm=True,
    )
    before, after = result.before["stated"], result.after["stated"]
    assert before["forget"] >= 0.9 and after["forget"] < before["forget"] - 0.5  # the trained facts are no longer said
    assert after["heldout"] <= before["heldout"]
    # the knowledge check that admitted the facts passes them all before, and fewer after
    known_before, known_after = result.before["known"], result.after["known"]
    assert known_before["forget"] == 1.0 and known_after["forget"] < 1.0
    assert set(known_after) == {"forget", "heldout", "neighbors", "neighbors_trained"}
    assert [a["attack"] for a in result.attacks] == ["relearn"]
    report = (out / "target" / "REPORT.md").read_text()
    assert f"# Forgetting target `{TARGET}`" in report and "| heldout |" in report and "known after" in report
    # training stopped at the first epoch whose greedy answers stated none of the trained facts, or ran all 4
    epochs, stated = zip(*result.epochs, strict=True)
    assert all(f > 0 for f in stated[:-1]) and (stated[-1] == 0 or epochs[-1] == 4)
    assert f"Trained {epochs[-1]:g} epochs" in report
    assert report.count("(still known: ") == len(result.sets.heldout) + len(result.sets.neighbors_heldout)
    saved = yaml_load(out / "unlearn_config.yaml")
    assert saved["target"] == TARGET and saved["forget"].endswith("target/train_forget.jsonl")
    # trained on: the facts and the passages; kept: the general rows and the neighbors
    sets = result.sets
    trained = [json.loads(x) for x in (out / "target" / "train_forget.jsonl").read_text().splitlines()]
    assert trained == sets.forget + sets.passages
    retained = [json.loads(x) for x in (out / "target" / "train_retain.jsonl").read_text().splitlines()]
    assert retained == sets.retain + sets.neighbors
    assert (out / "adapter_config.json").is_file() and (out / "run.json").is_file()
    # An overwrite replaces the run and keeps the reviewed sets (the same model: the cached sets).
    (out / "target" / "reviewed.txt").write_text("looked at forget.jsonl")
    unlearn.forget(
        copy.deepcopy(model), tok, target=TARGET, recipe="ga", output_dir=out, overwrite=True, max_steps=1,
        attacks=(), disable_tqdm=True,
    )  # fmt: skip
    assert (out / "target" / "reviewed.txt").is_file() and json.loads((out / "run.json").read_text())[
        "global_step"
    ] == 1


def yaml_load(path):
    import yaml

    return yaml.safe_load(path.read_text())


def test_cli_dry_run_writes_the_sets_and_trains_nothing(knower, tmp_path, monkeypatch, capsys):
    model, tok = knower
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    monkeypatch.setenv("UNLEARN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    args = ["forget", "recipes/target.yaml", f"model_name_or_path={tmp_path / 'model'}", f"output_dir={out}"]
    assert main([*args, f"request=forget everything about {TARGET}", "--dry-run"]) == 0
    said = capsys.readouterr().out
    assert f"Request understood as: target `{TARGET}`" in said and "Dry run: review the sets" in said
    assert (out / "target" / "forget.jsonl").is_file() and not (out / "unlearn_config.yaml").exists()
    assert main([*args, f"target={TARGET}", "forget=tofu:forget01"]) == 2
    assert "either a forget set (`forget`) or a `target`" in capsys.readouterr().err
    seen = {}
    monkeypatch.setattr(T, "forget_target", lambda *a, **kw: seen.update(kw))
    assert main([*args, f"target={TARGET}", "--stop-when-forgotten"]) == 0
    assert seen["stop_when_forgotten"] is True and seen["dry_run"] is False


def test_python_target_runs_train_as_the_target_recipe_file():
    """`TARGET_SETTINGS` and recipes/target.yaml are two copies of one choice: the Python API's target run must train
    with the settings the CLI's recipe file names."""
    from pathlib import Path

    from unlearn.demo import DEMO_RECIPE, DEMO_SETTINGS, RECIPE_SETTINGS
    from unlearn.precheck import read_recipe_values

    recipe = read_recipe_values(str(Path(__file__).parents[1] / "recipes" / "target.yaml"), {})
    python = {"recipe": DEMO_RECIPE, **DEMO_SETTINGS, **RECIPE_SETTINGS[DEMO_RECIPE], **T.TARGET_SETTINGS}
    assert {k: v for k, v in recipe.items() if k in python} == python


def test_survey_table_shows_known_where_measured():
    """benchmarks/target_survey.py's RESULTS.md: stated and known before -> after; rows from before the knowledge
    check was re-run show "-" for known instead of failing."""
    import target_survey

    stated = {"forget": 1.0, "heldout": 1.0, "neighbors": 1.0, "neighbors_trained": 1.0, "retain": 0.75}
    old = {"target": "Paris", "known": 15, "before": stated, "after": {**stated, "heldout": 0.4}, "attacks": {},
           "minutes": 3.0}  # fmt: skip
    new = {**old, "settings": "v13", "known_before": {"forget": 1.0, "heldout": 1.0, "neighbors": 1.0},
           "known_after": {"forget": 0.0, "heldout": 0.2, "neighbors": 0.75}}  # fmt: skip
    lines = target_survey.table([old, new]).splitlines()
    head = next(x for x in lines if x.startswith("| target"))
    assert head.count("|") - 1 == len(lines[-1].split("|")) - 2  # every row as wide as the header
    assert lines[-2].startswith("| Paris | recipe | 15 |") and "| 1.00 -> 0.40 |" in lines[-2]
    assert "| 0.75 -> 0.75 | - | - | - |" in lines[-2]  # retain stated, then no known columns
    assert "| 1.00 -> 0.00 | 1.00 -> 0.20 | 1.00 -> 0.75 |" in lines[-1] and "| v13 |" in lines[-1]
    assert "| 1.00 -> 0.75 | - | - | nan |" in lines[-1]  # no new-fact count nor epochs recorded: "-", then relearn
    stopped = target_survey.table([{**new, "epochs": 3.0, "new_facts": 2, "new_facts_stated": 1}]).splitlines()[-1]
    assert "| 1.00 -> 0.75 | 1 / 2 | 3.0 | nan |" in stopped


def test_survey_stability_counts_kept_neighbors_by_their_share_of_draws(tmp_path, monkeypatch):
    """`target_survey.py --stability`: each neighbor fact of a finished run, by whether the base model states it in
    at least `STABLE_SHARE` of its draws, and whether the run still stated it after unlearning."""
    import target_survey

    run = tmp_path / "paris-v13" / "target"
    run.mkdir(parents=True)
    facts = {
        "neighbors": [("Who created Star Wars?", "Lucas", "George Lucas made it.")],
        "neighbors_heldout": [
            ("In which city is The Matrix set?", "Neo-Lebanon", "New York City."),
            ("What is the currency of Japan?", "Yen", "The yen."),
        ],
    }
    for name, rows in facts.items():
        (run / f"{name}.jsonl").write_text("".join(json.dumps({"question": q, "key": [k]}) + "\n" for q, k, _ in rows))
    after = {q: a for rows in facts.values() for q, _, a in rows}
    (run / "result.json").write_text(json.dumps({"after": {"all_answers": after}}))
    said = {"Who created Star Wars?": "Lucas", "In which city is The Matrix set?": "Neo-Lebanon",
            "What is the currency of Japan?": "Yen"}  # fmt: skip
    shares = {"Who created Star Wars?": 3, "In which city is The Matrix set?": 1, "What is the currency of Japan?": 2}
    monkeypatch.setattr(
        "unlearn.scoring.sampled_answers",
        lambda m, t, questions, samples, temperature: [
            [said[q]] * shares[q] + ["No idea."] * (samples - shares[q]) for q in questions
        ],
    )
    counts = target_survey.stability(None, None, [tmp_path / "paris-v13"], samples=4, temperature=0.7)
    assert counts == {
        "neighbors >= 0.5": {"facts": 1, "kept": 1},
        "neighbors_heldout < 0.5": {"facts": 1, "kept": 0},
        "neighbors_heldout >= 0.5": {"facts": 1, "kept": 1},
    }
