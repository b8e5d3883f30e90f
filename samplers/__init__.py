"""Built-in sampler plugins."""
