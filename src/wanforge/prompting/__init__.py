"""Prompt expansion through an OpenAI-compatible chat-completions endpoint (no torch)."""
