"""Training: the loop every trainer runs on, and self-supervised pretraining on it.

``loop``         the loop: resume, accumulation, the non-finite guard, log and checkpoint cadence
``pretrain``     the V-JEPA 2 objective, the training step and pretraining's side of the loop
``config``       typed :class:`PretrainConfig` (model, mask, data, optim, phases, ...)
``schedules``    phase lookup, learning rate and EMA momentum at a global step
``regularizers`` anti-collapse terms (VICReg, SIGReg)
``ema``          the exponential-moving-average target encoder
``checkpoint``   keep-last-K, newest-valid finder, RNG state capture
``guard``        stopping a diverging run without losing its good checkpoints
``distributed``  torchrun initialisation, DDP / FSDP2 wrapping, rank-0-only helpers
``monitor``      progress bar, CSV / TensorBoard logs, loss-curve PNG, the collapse monitor
``cli``          ``vjepa2 pretrain``
"""
