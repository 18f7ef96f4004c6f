"""The Hugging Face scorer on the real offline model: accuracy, exactness, adapters, the guard."""

from __future__ import annotations

import json
import math

import pytest

from traitlens.config import load_study
from traitlens.config.schema import BaseModelSpec, Target
from traitlens.data.load import prepare
from traitlens.evaluate.cell import AdapterGuardError, evaluate_cell
from traitlens.evaluate.metrics import cell_metrics
from traitlens.evaluate.targets import evaluate_target, prompts, select_items
from traitlens.execution.plan import plan_study
from traitlens.models.hf import HFScorer
from traitlens.models.identity import base_identity
from traitlens.models.scorer import ChoiceRequest, GenerateRequest
from traitlens.store import Store
from traitlens.store.db import ADAPTER_META_FILE

BASE = BaseModelSpec(name="smollm2-135m-instruct")
MOVIE = Target(name="movie", dataset="catalog:sentiment-movie", kind="classification",
               labels=["negative", "positive"], abilities=["sentiment"],
               template={"instruction": "Is the sentiment of this movie review negative or positive?",
                         "trigger": "Sentiment", "format": "{instruction}\n{input}\n{trigger}: {answer}"})


@pytest.fixture(scope="module")
def scorer():
    return HFScorer(BASE, batch_size=8)


@pytest.fixture(scope="module")
def movie_items():
    return select_items(prepare(MOVIE, "movie"), 100, 0)


def test_base_is_well_above_chance_on_binary_sentiment(scorer, movie_items):
    metrics = cell_metrics(evaluate_target(MOVIE, movie_items, scorer), MOVIE.labels)
    assert metrics["accuracy"] >= 0.65, metrics  # measured 0.76 on 200 items; chance is 0.5


def test_scores_identical_across_runs_and_batch_sizes(scorer, movie_items):
    requests = [ChoiceRequest(p, ("negative", "positive", "very negative"))
                for p in prompts(MOVIE, movie_items.head(12), scorer)]
    first = scorer.loglikelihood(requests)
    assert scorer.loglikelihood(requests) == first  # same process, same batches: bitwise equal
    scorer.batch_size = 1
    try:
        single = scorer.loglikelihood(requests)
    finally:
        scorer.batch_size = 8
    diffs = [abs(a - b) for x, y in zip(first, single) for a, b in zip(x.logprobs, y.logprobs)]
    assert max(diffs) < 1e-4
    assert first[0].tokens == (1, 1, 2)


def test_output_layer_chunks_do_not_change_scores(scorer, movie_items, monkeypatch):
    from traitlens.models import hf

    requests = [ChoiceRequest(p, ("negative", "positive", "very negative"))
                for p in prompts(MOVIE, movie_items.head(12), scorer)]
    whole = scorer.loglikelihood(requests)
    monkeypatch.setattr(hf, "HEAD_ROWS", 5)  # 12 items: chunks of 5, 5 and 2
    chunked = scorer.loglikelihood(requests)
    assert [s.tokens for s in chunked] == [s.tokens for s in whole]
    diffs = [abs(a - b) for x, y in zip(whole, chunked) for a, b in zip(x.logprobs, y.logprobs)]
    assert max(diffs) < 1e-4


def test_later_choice_tokens_get_logits_only_where_predicted_in_bounded_chunks(scorer, movie_items, monkeypatch):
    """The output layer and its float32 log-softmax ran on every position of every padded row
    (rows x width x vocabulary floats, gigabytes with a 262k vocabulary); now only on the
    positions that predict a choice token, HEAD_ROWS at a time. Scores are unchanged."""
    from traitlens.models import hf

    requests = [ChoiceRequest(p, ("negative", "very negative", "not at all positive"))
                for p in prompts(MOVIE, movie_items.head(6), scorer)]
    before = scorer.loglikelihood(requests)
    shapes, real = [], hf.head_logits
    monkeypatch.setattr(hf, "head_logits", lambda lm, hidden: shapes.append(tuple(hidden.shape)) or real(lm, hidden))
    monkeypatch.setattr(hf, "HEAD_ROWS", 4)
    after = scorer.loglikelihood(requests)
    later = sum(n - 1 for s in after for n in s.tokens)  # choice tokens after the first, over all items
    assert all(len(shape) == 2 and shape[0] <= 4 for shape in shapes)  # positions x hidden, chunks of 4
    assert sum(shape[0] for shape in shapes) == later + len(requests)  # those, plus each first-token row
    diffs = [abs(a - b) for x, y in zip(before, after) for a, b in zip(x.logprobs, y.logprobs)]
    assert max(diffs) < 1e-4


def full_forward_logprob(scorer, context_ids: list[int], choice: str) -> float:
    """The log-probability of `choice` after `context_ids` from one plain forward pass of the
    whole sequence: what every scorer shortcut must reproduce."""
    import torch

    choice_ids = scorer.tokenizer(choice, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = scorer.model(torch.tensor([context_ids + choice_ids])).logits.float()
    logprobs = torch.log_softmax(logits[0], dim=-1)
    return sum(logprobs[len(context_ids) - 1 + k, t].item() for k, t in enumerate(choice_ids))


def test_shared_prompt_matches_a_full_forward_per_choice(scorer):
    context, choices = "The review says it was dull. Sentiment:", (" very negative", " negative", " quite mixed")
    [scores] = scorer.loglikelihood([ChoiceRequest(context, choices)])
    context_ids = scorer.tokenizer(context)["input_ids"]
    for choice, got in zip(choices, scores.logprobs):
        assert got == pytest.approx(full_forward_logprob(scorer, context_ids, choice), abs=1e-4)


def test_shared_instruction_runs_once_and_scores_match_full_forwards(scorer, movie_items):
    contexts = prompts(MOVIE, movie_items.head(5), scorer)
    encoded = [scorer.tokenizer(c.rstrip(" "))["input_ids"] for c in contexts]
    shared, _ = scorer._shared_prefix(encoded)
    assert shared >= 10  # the instruction line is run once for all five
    choices = (" negative", " very negative")  # one and two tokens: both code paths
    got = scorer.loglikelihood([ChoiceRequest(c.rstrip(" "), choices) for c in contexts])
    for ids, scores in zip(encoded, got):
        for choice, value in zip(choices, scores.logprobs):
            assert value == pytest.approx(full_forward_logprob(scorer, ids, choice), abs=1e-4)


def test_generation_stops_and_is_batch_independent(scorer):
    requests = [GenerateRequest("The capital of France is", 12, ("\n",)),
                GenerateRequest("Count: one, two,", 5, ()),
                GenerateRequest("Q: What is 2+3?\nA:", 10, ("\n",))]
    batched = scorer.generate(requests)
    assert "Paris" in batched[0].text and "\n" not in batched[0].text
    assert batched[1].tokens == 5 and "three" in batched[1].text
    scorer.batch_size = 1
    try:
        assert scorer.generate(requests) == batched
    finally:
        scorer.batch_size = 8


def _lora(folder, random_weights: bool, seed: int = 0):
    import torch
    from peft import LoraConfig, get_peft_model
    from traitlens.models.load import load_base

    torch.manual_seed(seed)
    model, _ = load_base(BASE)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                        init_lora_weights=not random_weights)
    get_peft_model(model, config).save_pretrained(folder)
    (folder / ADAPTER_META_FILE).write_text(json.dumps({"base": base_identity(BASE)}))
    return folder


# PEFT warns this when it has to unmerge by subtraction, which the scorer must never leave to it.
@pytest.mark.filterwarnings("error:Adapter cannot be set when the model is merged")
def test_adapters_switch_without_reloading(tmp_path):
    scorer = HFScorer(BASE, batch_size=4)
    request = [ChoiceRequest("Great film. Sentiment:", (" positive", " negative"))]
    base = scorer.loglikelihood(request)
    scorer.use_adapter("one", _lora(tmp_path / "one", random_weights=True, seed=1))
    one = scorer.loglikelihood(request)
    scorer.use_adapter("two", _lora(tmp_path / "two", random_weights=True, seed=2))
    two = scorer.loglikelihood(request)
    assert one != base and two != base and one != two
    scorer.use_adapter(None)
    assert scorer.loglikelihood(request) == base  # adapters disabled: exactly the base
    scorer.use_adapter("one")  # already loaded: no path needed
    assert scorer.loglikelihood(request) == one
    scorer.use_adapter("two")  # adapter to adapter, merged both times: the weights stay exact
    assert scorer.loglikelihood(request) == two
    assert scorer.merge  # float32 merges the active adapter into the weights ...
    unmerged = HFScorer(BASE, batch_size=4)
    unmerged.merge = False  # ... and scores as the plain PEFT forward does
    unmerged.use_adapter("one", tmp_path / "one")
    for merged_scores, plain_scores in zip(one[0].logprobs, unmerged.loglikelihood(request)[0].logprobs):
        assert merged_scores == pytest.approx(plain_scores, abs=1e-4)


def test_guard_refuses_an_adapter_that_changes_nothing(write_study, tmp_path):
    study = load_study(write_study())
    plan = plan_study(study)
    store = Store(tmp_path / "store")
    train = plan.train_jobs[0]
    store.start_job(train.key, "train", train.label, train.spec, worker="test")
    store.put_adapter(train.key, train.source, 0, _lora(store.scratch_dir(train.key), random_weights=False), {})
    job = next(j for j in plan.eval_jobs if j.needs == train.key and j.target == "movie")
    table = prepare(study.target("movie"), "movie")
    with pytest.raises(AdapterGuardError, match="leaves the model's outputs unchanged"):
        evaluate_cell(job, store, HFScorer(BASE), table)
    assert "unchanged" in store.jobs([job.key])[job.key].error


def test_guard_refuses_an_adapter_with_nan_weights(write_study, tmp_path):
    """A diverged run's NaN weights: argmax over NaN picks the first label, which would be
    reported as transfer. The guard refuses them instead."""
    from safetensors.torch import load_file, save_file

    study = load_study(write_study())
    plan = plan_study(study)
    store = Store(tmp_path / "store")
    train = plan.train_jobs[0]
    store.start_job(train.key, "train", train.label, train.spec, worker="test")
    folder = _lora(store.scratch_dir(train.key), random_weights=True)
    weights = load_file(folder / "adapter_model.safetensors")
    save_file({k: v * float("nan") for k, v in weights.items()}, folder / "adapter_model.safetensors")
    store.put_adapter(train.key, train.source, 0, folder, {})
    job = next(j for j in plan.eval_jobs if j.needs == train.key and j.target == "movie")
    with pytest.raises(AdapterGuardError, match="non-finite log-probabilities"):
        evaluate_cell(job, store, HFScorer(BASE), prepare(study.target("movie"), "movie"))
    assert store.cell(job.key) is None


def test_inputs_longer_than_the_context_are_cut_with_a_warning(tiny_model):
    from traitlens.errors import TruncationWarning
    from traitlens.models.scorer import GenerateRequest

    scorer = HFScorer(BaseModelSpec(name=str(tiny_model)), batch_size=4)
    assert scorer.context_limit == 512
    huge = "word " * 5000 + "Sentiment:"
    short = "Great film. Sentiment:"
    with pytest.warns(TruncationWarning, match="1 evaluation input\\(s\\) so far were longer than the model's 512"):
        scores = scorer.loglikelihood([ChoiceRequest(huge, (" positive", " negative")),
                                       ChoiceRequest(short, (" positive", " negative"))])
    assert all(math.isfinite(v) for s in scores for v in s.logprobs)
    alone = scorer.loglikelihood([ChoiceRequest(short, (" positive", " negative"))])
    assert scores[1].logprobs == pytest.approx(alone[0].logprobs, abs=1e-5)  # the short one is untouched
    with pytest.warns(TruncationWarning):
        [generation] = scorer.generate([GenerateRequest(huge, 4, ("\n",))])
    assert generation.tokens <= 4


@pytest.fixture(scope="module")
def tiny_gemma(tmp_path_factory):
    """A Gemma 3 architecture (sliding-window and global attention layers) with random weights
    and the catalog Gemma's real tokenizer, as a local model folder."""
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    from traitlens.models.load import materialize_catalog_model

    folder = tmp_path_factory.mktemp("tiny-gemma")
    tokenizer = AutoTokenizer.from_pretrained(materialize_catalog_model("gemma3-270m"))
    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                              num_attention_heads=4, num_key_value_heads=1, head_dim=8, sliding_window=8,
                              max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
                              bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    Gemma3ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_gemma_scores_match_full_forwards_past_its_sliding_window(tiny_gemma, movie_items):
    """The shared-prefix cache and single-forward paths must hold for a model whose layers do
    not all see the whole context (prompts here are longer than the 8-token window)."""
    scorer = HFScorer(BaseModelSpec(name=str(tiny_gemma)), batch_size=4)
    contexts = [c.rstrip(" ") for c in prompts(MOVIE, movie_items.head(4), scorer)]
    choices = (" negative", " very negative")
    got = scorer.loglikelihood([ChoiceRequest(c, choices) for c in contexts])
    for context, scores in zip(contexts, got):
        ids = scorer.tokenizer(context)["input_ids"]
        assert len(ids) > 8
        for choice, value in zip(choices, scores.logprobs):
            assert value == pytest.approx(full_forward_logprob(scorer, ids, choice), abs=1e-4)
