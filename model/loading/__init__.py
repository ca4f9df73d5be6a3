"""Loading: from files on disk (GGUF, Hugging Face or MLX folders, Hub ids) to weights, config, tokenizer and chat template."""
