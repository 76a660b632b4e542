"""Small mixtures of experts of transformers' model types, built from configurations (nothing
downloaded), for measuring on a CPU: their experts run as grouped matmuls (``grouped_mm``) behind
the routing ops (``topk``, ``sort``, ``floor_divide``, ``histc``, ``cumsum``, ``index_put``), the
kinds ``profile`` learned last. The default configurations of these types are 7-235B
parameters; these keep each type's layer structure (its router, top k, shared experts where it
has them) at a size a 2-core VM runs in milliseconds (8 layers of 512):

    python benchmarks/language_accuracy.py --predictor P --nets \
        benchmarks/moe_family.py:mixtral benchmarks/moe_family.py:qwen2_moe ...
"""
from __future__ import annotations

SIZE = dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4,
            vocab_size=32000)
NAMES = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "granitemoe", "deepseek_v3")


def _build(model_type: str, **extra):
    import transformers

    transformers.logging.set_verbosity_error()
    config = transformers.AutoConfig.for_model(model_type, **SIZE, **extra)
    return transformers.AutoModel.from_config(config).eval()


def mixtral():       # 8 experts, top 2
    return _build("mixtral", intermediate_size=1024, num_local_experts=8, num_experts_per_tok=2)


def qwen2_moe():     # 16 experts, top 4, and a shared expert
    return _build("qwen2_moe", moe_intermediate_size=512, shared_expert_intermediate_size=1024,
                  num_experts=16, num_experts_per_tok=4, decoder_sparse_step=1)


def qwen3_moe():     # 32 experts, top 4
    return _build("qwen3_moe", moe_intermediate_size=512, num_experts=32, num_experts_per_tok=4,
                  decoder_sparse_step=1, head_dim=64)


def olmoe():         # 16 experts, top 4
    return _build("olmoe", intermediate_size=512, num_experts=16, num_experts_per_tok=4)


def granitemoe():    # 8 experts, top 2
    return _build("granitemoe", intermediate_size=1024, num_local_experts=8,
                  num_experts_per_tok=2)


def deepseek_v3():   # 16 experts in 4 groups, top 4 of the best 2 groups (gather, scatter, not)
    return _build("deepseek_v3", intermediate_size=1024, moe_intermediate_size=256,
                  n_routed_experts=16, n_shared_experts=1, num_experts_per_tok=4, n_group=4,
                  topk_group=2, first_k_dense_replace=1, q_lora_rank=256, kv_lora_rank=128,
                  qk_rope_head_dim=32, qk_nope_head_dim=32, v_head_dim=64)
