"""Base models: where they come from, what identifies them, how they are loaded, and the scorers
that answer evaluation requests (the Hugging Face one, and a fake for tests)."""
