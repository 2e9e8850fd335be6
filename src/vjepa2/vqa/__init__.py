"""Video question answering with the V-JEPA 2 encoder (arXiv 2506.09985, video QA): :mod:`.questions`
(toy-vqa and JSON-lines questions), :mod:`.modeling` (projector + causal LM), :mod:`.trainer`
(``vjepa2 train-vqa``, evaluation, loading), :mod:`.cli` (``train-vqa``, ``ask``)."""
