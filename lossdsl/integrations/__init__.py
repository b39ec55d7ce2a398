"""Adapters for other libraries, one module each; every one imports its library inside itself
and uses only lossdsl's public API (the core never imports this package)."""
