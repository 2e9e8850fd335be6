"""Environments to collect trajectories from and to plan in: the built-in ``toy-push`` world and any
Gymnasium env (:mod:`.control` puts both behind the interface the planner drives)."""
