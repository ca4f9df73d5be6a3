"""The internals views, headless: attention weights, the logit lens and the cache grid, read from the model."""
