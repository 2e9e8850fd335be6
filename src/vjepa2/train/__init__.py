"""The pretraining method (V-JEPA 2), run on the training engine (:mod:`vjepa2.engine`).

``pretrain``     the V-JEPA 2 objective, the training step and pretraining's side of the loop
``config``       typed :class:`PretrainConfig` (model, mask, data, phases, ...)
``regularizers`` anti-collapse terms (VICReg, SIGReg)
``ema``          the exponential-moving-average target encoder
``cli``          ``vjepa2 pretrain``
"""
