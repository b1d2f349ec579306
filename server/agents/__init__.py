"""Agents: given an experiment context, return a proposal. Agents never write to disk."""
