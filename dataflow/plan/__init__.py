"""Logical plans, optimizer rules and the planner (the only bridge to ``dataflow.exec``)."""
