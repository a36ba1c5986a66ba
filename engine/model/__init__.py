"""LLaMA-Omni model: loaders for the official files, encoder, adapter, LLM, unit decoder."""
