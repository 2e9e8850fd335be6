"""Environments to collect trajectories from: the built-in ``toy-push`` world and any Gymnasium env."""
