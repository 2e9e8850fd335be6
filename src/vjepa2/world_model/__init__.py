"""The action-conditioned world model (V-JEPA 2-AC): trajectories -> frozen-encoder features ->
AC predictor training -> rollouts for planning; plus a built-in toy world (``envs``).

Submodules are imported on demand (``vjepa2.world_model.train``, ``.features``, ``.collect``,
``.envs.toy_push``, ``.envs.gym_adapter``, ``.weights``) so that importing this package stays cheap.
"""
