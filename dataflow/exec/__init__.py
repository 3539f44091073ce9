"""The streaming executor: physical operators, scheduling loop, budgets, stats."""
