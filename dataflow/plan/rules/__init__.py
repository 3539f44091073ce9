"""Optimizer rules, one a file. Each module exposes ``apply(plan) -> plan``: a pure
rewrite that returns the very same node objects where it changes nothing (the
optimizer detects a fixpoint by identity)."""
