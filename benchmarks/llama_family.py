"""Small language models of the Llama family, built from configurations (nothing downloaded),
for measuring on a CPU: their RMSNorms and rotary embeddings are written op by op (pow, mean,
add, rsqrt, mul; neg, cat), the kinds ``profile`` learned last. The default configurations of
these model types are 1-7B parameters, too large to measure on a 2-core VM; these keep each
type's layer structure at GPT-2-small's size (12 layers of 768, 12 heads):

    python benchmarks/language_accuracy.py --predictor P --nets \
        benchmarks/llama_family.py:llama benchmarks/llama_family.py:qwen2 ...
"""
from __future__ import annotations

SIZE = dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
            num_attention_heads=12, num_key_value_heads=4, vocab_size=32000)
NAMES = ("llama", "qwen2", "qwen3", "mistral", "gemma", "olmo2")


def _build(model_type: str, **extra):
    import transformers

    transformers.logging.set_verbosity_error()
    config = transformers.AutoConfig.for_model(model_type, **SIZE, **extra)
    return transformers.AutoModel.from_config(config).eval()


def llama():
    return _build("llama")


def qwen2():
    return _build("qwen2")


def qwen3():
    return _build("qwen3", head_dim=64)


def mistral():
    return _build("mistral", head_dim=64)


def gemma():
    return _build("gemma", head_dim=64)


def olmo2():
    return _build("olmo2")
