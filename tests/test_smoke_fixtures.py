from latelex.encoders.loading import load_tokenizer, load_transformer


def test_tiny_models_load(tiny_bert, tiny_mlm):
    tok = load_tokenizer(tiny_bert)
    ids = tok("What is a cell?", add_special_tokens=True)["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert tok.unk_token_id not in ids
    assert load_transformer(tiny_bert).config.hidden_size == 32
    assert load_transformer(tiny_mlm, masked_lm=True).get_output_embeddings() is not None
