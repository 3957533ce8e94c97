"""Chaos tests: random SIGKILLs of workers and of the chain-writer under message load."""
