"""The rotating KV cache: what each layer keeps of the keys and values across turns."""
