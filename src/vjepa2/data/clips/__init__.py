"""Videos and clips for pretraining and evaluation: decoding, list files and folders, the procedural videos, transforms, batches."""
