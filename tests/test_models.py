"""Base-model loading with the real offline model (converted once, then cached)."""

from __future__ import annotations

import time

import pytest

from traitlens.config.schema import BaseModelSpec, Template
from traitlens.data.template import render
from traitlens.errors import TraitlensError
from traitlens.models.load import load_base, materialize_catalog_model

CATALOG_MODEL = BaseModelSpec(name="smollm2-135m-instruct")


@pytest.fixture(scope="module")
def smollm():
    materialize_catalog_model(CATALOG_MODEL.name)  # first use converts the GGUF (~30 s)
    start = time.perf_counter()
    model, tokenizer = load_base(CATALOG_MODEL)
    return model, tokenizer, time.perf_counter() - start


def test_cached_catalog_model_loads_fast_and_generates_sense(smollm):
    import torch

    model, tokenizer, seconds = smollm
    assert seconds < 5, f"cached load took {seconds:.1f} s"
    assert type(model).__name__ == "LlamaForCausalLM" and not hasattr(model.config, "quantization_config")
    inputs = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    continuation = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:])
    assert "Paris" in continuation


def test_bfloat16_option():
    import torch

    model, _ = load_base(CATALOG_MODEL, dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    with pytest.raises(TraitlensError, match="float16"):
        load_base(CATALOG_MODEL, dtype="float16")


def test_local_folder_loads_the_same_model(smollm):
    model, _, _ = smollm
    folder = materialize_catalog_model(CATALOG_MODEL.name)
    again, tokenizer = load_base(BaseModelSpec(name=str(folder)))
    assert tokenizer.pad_token is not None
    assert all((a == b).all() for a, b in zip(model.parameters(), again.parameters()))


def test_chat_template_mode_uses_the_tokenizer(smollm):
    _, tokenizer, _ = smollm
    rendered = render(Template(chat=True, instruction="Classify."), {"input": "Great", "answer": "positive"},
                      tokenizer=tokenizer)
    assert "<|im_start|>user" in rendered.prompt and rendered.prompt.rstrip().endswith("assistant")
    assert "Classify.\nGreat\nAnswer:" in rendered.prompt and rendered.answer == "positive"


def test_unreachable_hub_model_is_a_clear_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(TraitlensError, match="base: could not load 'nobody-here/no-such-model'"):
        load_base(BaseModelSpec(name="nobody-here/no-such-model"))
