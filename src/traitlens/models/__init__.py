"""Base models: where they come from, what identifies them, and (later) how they are loaded."""
