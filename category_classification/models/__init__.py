"""Model definitions and their files: linear, encoder, tokenizers, LoRA."""
