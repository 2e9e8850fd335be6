"""Self-supervised pretraining: the V-JEPA 2 loop and the pieces other trainers reuse.

``config``       typed :class:`PretrainConfig` (model, mask, data, optim, phases, ...)
``schedules``    phase lookup, learning rate and EMA momentum at a global step
``ema``          the exponential-moving-average target encoder
``checkpoint``   atomic writes, keep-last-K, newest-valid finder, RNG state capture
``distributed``  torchrun initialisation, DDP / FSDP2 wrapping, rank-0-only helpers
``monitor``      progress bar, CSV / TensorBoard logs, loss-curve PNG
``pretrain``     the training step and the loop (``vjepa2 pretrain``)
"""
