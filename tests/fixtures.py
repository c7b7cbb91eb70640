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
