"""Frozen evaluation: attentive probes on a frozen encoder's features.

- :mod:`vjepa2.evals.probe` — the probe grid (lr x weight decay, trained at once) and ``vjepa2 eval probe``;
- :mod:`vjepa2.evals.features` — views, segments, the feature cache (memory-mapped) and the live path;
- :mod:`vjepa2.evals.data` — labelled list files / folders and built-in tasks, with early, located errors;
- :mod:`vjepa2.evals.toy` — the built-in tasks: toy-SSv2 (time-reversed class pairs), toy-appearance,
  toy-anticipation;
- :mod:`vjepa2.evals.anticipation` — action anticipation with the predictor, focal loss, EPIC-KITCHENS-100 CSVs;
- :mod:`vjepa2.evals.metrics` — top-k, per-class accuracy, class-mean recall, confusion matrix figure;
- :mod:`vjepa2.evals.probe_weights` — public / transformers probe checkpoint formats;
- :mod:`vjepa2.evals.cli` — ``vjepa2 eval probe | anticipation | make-dataset | toy-report``.
"""
