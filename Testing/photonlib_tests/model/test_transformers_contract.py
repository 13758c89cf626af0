"""The transformers contract: every internal the adapter relies on, checked against the installed release.

Run after upgrading transformers; a failure prints the list of what changed. The checks also
run when the model classes load (``from photonlib.model import PhotonConfig``), which then stops
with the same list.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import transformers
from packaging.requirements import Requirement
from packaging.version import Version

from photonlib.model import transformers_adapter as adapter

from support.models import phantom_volume, tiny_model, tiny_processor


def test_installed_release_meets_the_contract():
    problems = adapter.check_contract()
    assert not problems, adapter.incompatibility_message(problems)
    print(f"transformers {transformers.__version__}: all {len(adapter.CONTRACT)} pieces of the contract hold")


def test_installed_release_is_inside_the_declared_range():
    assert adapter.SUPPORTED_TRANSFORMERS.contains(Version(transformers.__version__))


def test_declared_range_matches_the_package_metadata():
    """pyproject.toml and the adapter state one range (raising it is a one-line change in each)."""
    from importlib.metadata import requires

    declared = [Requirement(text) for text in requires("photonlib")]
    transformers_requirement = next(req for req in declared if req.name == "transformers")
    assert transformers_requirement.specifier == adapter.SUPPORTED_TRANSFORMERS


def test_an_incompatible_signature_is_reported_readably(monkeypatch):
    """A release that renamed the decoder layer's cache keyword and moved create_causal_mask's arguments."""

    def renamed_layer_forward(
        self, hidden_states, attention_mask=None, kv_store=None, position_embeddings=None, **kwargs
    ):
        raise AssertionError("never called")

    def reordered_mask(config, attention_mask, cache_position, inputs_embeds=None, **kwargs):
        raise AssertionError("never called")

    monkeypatch.setattr(adapter._DECODER_LAYER, "forward", renamed_layer_forward)
    monkeypatch.setattr(adapter._masking, "create_causal_mask", reordered_mask)
    contract = adapter.build_contract()
    problems = adapter.check_contract(contract)
    message = adapter.incompatibility_message(problems)
    print(message)
    assert "Qwen2_5_VLDecoderLayer.forward: missing parameter(s) use_cache" in message
    assert "Qwen2_5_VLDecoderLayer.forward cache keyword: has none of cache, past_key_values" in message
    assert "create_causal_mask cache keyword: has none of cache, past_key_values" in message
    assert "create_causal_mask: missing parameter(s) layer_idx" in message
    assert message.splitlines()[0].endswith(f"(supported: transformers{adapter.SUPPORTED_RANGE})")
    assert len(problems) == 4, problems


def test_a_missing_class_is_a_problem_not_a_crash():
    def gone():
        raise AttributeError("module 'modeling_qwen2_5_vl' has no attribute 'Qwen2_5_VLVisionBlock'")

    problems = adapter.check_contract((adapter.Requirement("Qwen2_5_VLVisionBlock.forward", gone),))
    assert problems == [
        "Qwen2_5_VLVisionBlock.forward: AttributeError: module 'modeling_qwen2_5_vl' has no attribute 'Qwen2_5_VLVisionBlock'"
    ]


def test_prefill_fills_the_kv_cache_of_every_layer():
    model = tiny_model(seed=0)
    batch = tiny_processor(model)([phantom_volume()], ["Is there a lesion?"])
    with torch.no_grad():
        output = model(**batch, use_cache=True, logits_to_keep=1)
    width = output.attention_mask.shape[1]
    assert width < batch["input_ids"].shape[1]  # ITS dropped tokens, and every layer holds the survivors
    assert [
        adapter.cache_length(output.cache, layer) for layer in range(model.config.text_config.num_hidden_layers)
    ] == [width] * 4
    adapter.check_cache_filled(output.cache, 4, width)


def test_a_layer_that_swallows_the_cache_keyword_fails_loudly(monkeypatch):
    """The silent break: a release whose layer takes **kwargs and ignores the keyword the adapter passes."""
    model = tiny_model(seed=0)
    batch = tiny_processor(model)([phantom_volume()], ["Is there a lesion?"])
    monkeypatch.setattr(adapter, "_LAYER_CACHE_KEYWORD", "renamed_cache")
    # ITS reads layer k's keys from the cache, so the prefill stops there, naming layers 0..k.
    layers = list(range(model.config.its_layer + 1))
    with pytest.raises(
        adapter.CacheNotFilledError, match=re.escape(f"decoder layer(s) {layers} holds {[0] * len(layers)} tokens")
    ):
        model.generate(**batch, max_new_tokens=2)


#: transformers modules whose contents are internals: only the adapter may import them.
INTERNAL_MODULES = re.compile(
    r"transformers\.(models\.|masking_utils|cache_utils|vision_utils|initialization|modeling_utils|integrations)"
    r"|from transformers import .*\b(initialization|masking_utils|cache_utils|vision_utils)\b"
)


def test_only_the_adapter_imports_transformers_internals():
    package = Path(adapter.__file__).resolve().parents[1]
    offenders = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "transformers_adapter.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.lstrip().startswith(("import ", "from ")) and INTERNAL_MODULES.search(line):
                offenders.append(f"{path.relative_to(package.parent)}:{number}: {line.strip()}")
    assert not offenders, "transformers internals imported outside the adapter:\n" + "\n".join(offenders)


def test_the_layering_check_sees_an_internal_import():
    assert INTERNAL_MODULES.search("from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import repeat_kv")
    assert INTERNAL_MODULES.search("from transformers import initialization as init")
    assert not INTERNAL_MODULES.search("from transformers import AutoTokenizer, Qwen2_5_VLConfig")
