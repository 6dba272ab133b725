"""The trained TinyLM that ships in course_lib/weights/tinylm-stories.

It must load, be the file its model card names, predict held-out stories far
better than chance, finish its stories on its own <EOS>, keep the hero's name,
and open unchanged in Hugging Face transformers, offline.
"""

import json
import re
import sys
from pathlib import Path

import pytest
import torch

from course_lib.generate import generate
from course_lib.model import TinyLMConfig, build_model
from course_lib.pretrained import TRAINED_DIR, WEIGHTS_FILE, sha256_of
from course_lib.stories import HELDOUT_SEEDS, heldout, hero_of, stories, story
from course_lib.tokenizer import EOS, decode, encode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import train_tinylm  # noqa: E402

CARD = (TRAINED_DIR / "README.md").read_text()
# A fresh range of held-out seeds, not the one the training script evaluated on.
FRESH_OFFSET = 50_000


@pytest.fixture(scope="module")
def model():
    return build_model()


def card_number(label: str) -> float:
    m = re.search(rf"{re.escape(label)}\s*\|\s*([0-9.]+)", CARD)
    assert m, f"the model card states no {label!r}"
    return float(m.group(1))


def test_weights_are_the_file_the_model_card_names():
    m = re.search(r"sha256 `([0-9a-f]{64})`", CARD)
    assert m, "the model card records no sha256"
    assert sha256_of(TRAINED_DIR / WEIGHTS_FILE) == m.group(1)


def test_build_model_loads_the_trained_weights_by_default(model):
    assert model.config == TinyLMConfig()
    random = build_model(weights="random")
    assert not torch.equal(model.lm_head.weight, random.lm_head.weight)
    with pytest.raises(ValueError, match="weights"):
        build_model(weights="pretrained")
    with pytest.raises(ValueError, match="cfg"):
        build_model(TinyLMConfig(num_hidden_layers=2))


def test_heldout_bits_per_byte_is_at_or_below_the_stated_figure(model):
    seeds = range(HELDOUT_SEEDS.start + FRESH_OFFSET, HELDOUT_SEEDS.start + FRESH_OFFSET + 200)
    bpb = train_tinylm.bits_per_byte(model, seeds)
    stated = card_number("held-out bits per byte")
    assert bpb <= stated + 0.01, (bpb, stated)
    assert bpb < 1.0                     # uniform over bytes would be 8.0


@pytest.fixture(scope="module")
def continuations(model):
    """Greedy continuations of 60 fresh held-out openings (their first sentence)."""
    tests = heldout(60, offset=FRESH_OFFSET + 1000)
    prompts = [encode(s.opening(1)) for s in tests]
    limit = model.config.max_position_embeddings
    room = limit - max(len(p) for p in prompts)
    with torch.no_grad():
        outs = generate(model, prompts, max_new_tokens=room)
    return tests, outs


def test_greedy_stories_end_on_their_own_eos(continuations):
    tests, outs = continuations
    ended = sum(1 for o in outs if o and o[-1] == EOS)
    assert ended / len(outs) >= 0.95, f"{ended}/{len(outs)} ended with <EOS>"
    assert all(decode(o).rstrip().endswith("The end.") for o in outs if o and o[-1] == EOS)


def test_greedy_stories_keep_the_hero(continuations):
    tests, outs = continuations
    kept = sum(1 for s, o in zip(tests, outs) if hero_of(decode(o)) == s.hero)
    assert kept / len(outs) >= 0.90, f"the hero was kept in {kept}/{len(outs)}"


def test_transformers_loads_the_directory_offline_and_generates_the_same_text(model, monkeypatch):
    transformers = pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hf = transformers.LlamaForCausalLM.from_pretrained(TRAINED_DIR).eval()
    tok = transformers.AutoTokenizer.from_pretrained(TRAINED_DIR)
    for s in heldout(3, offset=FRESH_OFFSET + 2000):
        text = s.opening(1)
        ids = tok(text, return_tensors="pt")["input_ids"]
        assert ids[0].tolist() == encode(text)
        with torch.no_grad():
            theirs = hf.generate(ids, max_new_tokens=200, do_sample=False)[0, ids.shape[1]:].tolist()
            ours = generate(model, [encode(text)], max_new_tokens=200)[0]
        assert theirs == ours
        assert tok.decode(theirs, skip_special_tokens=True) == decode(ours)


def test_the_tokenizer_files_cover_exactly_the_course_ids():
    tj = json.loads((TRAINED_DIR / "tokenizer.json").read_text())
    ids = sorted(list(tj["model"]["vocab"].values()) + [t["id"] for t in tj["added_tokens"]])
    assert ids == list(range(TinyLMConfig().vocab_size))


def test_the_grammar_refers_back_and_has_a_long_tail():
    sample = stories(range(3000))
    lengths = [len(s.sentences) for s in sample]
    assert min(lengths) == 2 and max(lengths) == 15
    assert sorted(lengths)[len(lengths) // 2] <= 6          # most are short ...
    assert sum(n >= 12 for n in lengths) >= 0.03 * len(lengths)   # ... with a long tail
    for s in sample:
        assert s.sentences[-1] == "The end." and s.hero in s.sentences[0]
        text = s.text
        if f"used the {s.obj}" in text:          # an object is used only after it was found
            assert text.index(f"found a {s.obj}") < text.index(f"used the {s.obj}")
        if s.friend and "came back" in text:      # a friend comes back only after being met
            assert text.index(f"named {s.friend}") < text.index(f"{s.friend} the")
    assert story(12345) == story(12345)                       # seeded
    assert hero_of("Sue met a cat named Tom. Sue and Tom played tag.") == "Sue"


def test_training_script_runs_end_to_end_and_the_loss_goes_down(tmp_path):
    metrics = train_tinylm.main(["--steps", "12", "--batch-size", "4", "--warmup", "2", "--lr", "1e-2",
                                 "--log-every", "4", "--eval-stories", "4", "--threads", "1",
                                 "--out", str(tmp_path), "--no-card-eval"])
    assert metrics["train_bpb_last"] < metrics["train_bpb_first"]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "loss_curve.csv", "loss_curve.svg", "README.md"):
        assert (tmp_path / name).is_file(), name
    reloaded = build_model(weights="random")     # a different model ...
    from course_lib.pretrained import load_pretrained
    small = load_pretrained(tmp_path)            # ... and the one just written reads back
    assert small.config == reloaded.config


def test_storyteller_panel_streams_a_story_and_names_a_bad_opening(model):
    from course_lib.widgets.story import StoryPanel

    panel = StoryPanel(model, opening="Once upon a time, there was a brave cat named Max. ", max_new_tokens=400)
    text = panel.run()
    assert text.rstrip().endswith("The end.") and "&lt;EOS&gt;" in panel.message.value
    assert hero_of(text) == "Max"
    panel.opening.value = "   "
    assert panel.run() == "" and "opening" in panel.message.value and "#c62828" in panel.message.value
    panel.opening.value = "x" * 600
    assert panel.run() == "" and "at most" in panel.message.value
    panel.opening.value, panel.budget.value = "Once upon a time, ", 5
    assert len(encode(panel.run(), sos=False)) <= 5 and "budget" in panel.message.value
