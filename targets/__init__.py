"""Built-in target plugins."""
