"""Structure discovery: the parts of models found from their module trees, and errors that name what is missing."""

import pytest
import torch
import transformers as T

from workbench.errors import ModelSpecError
from workbench.structure import discover


class _Tree(T.PreTrainedModel):
    """A custom model: an embedding, `blocks` as given, and a head, with the config's layer count."""

    config_class = T.PretrainedConfig

    def __init__(self, blocks: torch.nn.Module, n_layers: int = 2):
        super().__init__(T.PretrainedConfig(num_hidden_layers=n_layers, hidden_size=8, num_attention_heads=2))
        self.embed = torch.nn.Embedding(10, 8)
        self.stack = blocks
        self.head = torch.nn.Linear(8, 10)

    def get_input_embeddings(self):
        return self.embed

    def get_output_embeddings(self):
        return self.head


class _Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.mixer_thing = torch.nn.Linear(8, 8)
        self.proj = torch.nn.Linear(8, 8)


def test_a_tree_without_blocks_names_the_missing_part_and_where_it_looked():
    tree = _Tree(torch.nn.ModuleList([torch.nn.Linear(8, 8) for _ in range(3)]))
    with pytest.raises(ModelSpecError, match=r"could not find the blocks of _Tree: no ModuleList of 2 blocks .*"
                                             r"ModuleLists: stack \(3\)"):
        discover(tree)


def test_a_tree_without_an_embedding_names_it():
    tree = _Tree(torch.nn.ModuleList([_Block(), _Block()]))
    tree.get_input_embeddings = lambda: None
    with pytest.raises(ModelSpecError, match="could not find the token embedding of _Tree"):
        discover(tree)


def test_blocks_without_a_recognisable_mixer_are_found_with_the_parts_they_have():
    structure = discover(_Tree(torch.nn.ModuleList([_Block(), _Block()])))
    assert structure.blocks == "stack" and structure.attn == (None, None) and structure.softmax == (False, False)
    assert structure.mlp == ("proj", "proj")  # the block's last projection back to the width
    assert (structure.embed, structure.unembed, structure.final_norm) == ("embed", "head", None)


def _tiny(config_class, **sizes):
    config = config_class(vocab_size=64, pad_token_id=0, bos_token_id=1, eos_token_id=2, **sizes)
    return T.AutoModelForCausalLM.from_config(config)


def test_bloom_reads_the_projections_before_its_modules_add_the_residual():
    structure = discover(_tiny(T.BloomConfig, hidden_size=16, n_layer=2, n_head=2))
    assert structure.attn_out == ("self_attention.dense",) * 2 and structure.mlp_out == ("mlp.dense_4h_to_h",) * 2


def test_opt_final_norm_registered_before_the_blocks_is_found():
    structure = discover(_tiny(T.OPTConfig, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, ffn_dim=32,
                               word_embed_proj_dim=16))
    assert structure.final_norm == "model.decoder.final_layer_norm" and structure.mlp == ("fc2", "fc2")


def test_a_mixture_of_experts_exposes_its_router_and_experts():
    structure = discover(_tiny(T.MixtralConfig, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                               num_key_value_heads=1, intermediate_size=32, num_local_experts=4))
    assert structure.router == ("mlp.gate",) * 2 and structure.experts == ("mlp.experts",) * 2
    assert (structure.n_heads, structure.n_kv_heads, structure.head_dim) == (2, 1, 8)


def test_layers_split_over_parallel_lists_are_refused_not_misread():
    """XLM keeps attentions, norms and FFNs in sibling lists: no module's output is the residual stream, so
    reading one list as the blocks would record the wrong thing."""
    config = T.XLMConfig(vocab_size=64, emb_dim=16, n_layers=2, n_heads=2, pad_index=0)
    with pytest.raises(ModelSpecError, match=r"split over parallel lists \(transformer.attentions, "):
        discover(T.XLMWithLMHeadModel(config))


def test_the_final_norm_is_found_above_the_encoder_and_first_after_the_blocks():
    prelayernorm = T.RobertaPreLayerNormForMaskedLM(T.RobertaPreLayerNormConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32))
    assert discover(prelayernorm).final_norm == "roberta_prelayernorm.LayerNorm"
    bert = T.BertForMaskedLM(T.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                          intermediate_size=32))
    assert discover(bert).final_norm is None  # post-norm blocks: nothing normalises after the last one
