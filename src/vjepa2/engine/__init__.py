"""The training engine every trainer runs on, whatever it trains.

``loop``         the run (process group, output checks), the loop (resume, log / checkpoint cadence, Ctrl-C),
                 the optimiser step over accumulation micro-batches
``config``       optimiser, checkpoint, log and process settings; how two run configs differ
``schedules``    phase lookup, learning rate and EMA momentum at a global step
``losses``       loss helpers both objectives share
``checkpoint``   keep-last-K, newest-valid finder, RNG state capture
``guard``        stopping a diverging run without losing its good checkpoints
``interrupt``    Ctrl-C / SIGTERM: finish the step, checkpoint, stop
``distributed``  torchrun initialisation, DDP / FSDP2 wrapping, rank-0-only helpers
``monitor``      progress bar, CSV / TensorBoard logs, loss-curve PNG, the collapse monitor
"""
