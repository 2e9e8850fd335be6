"""V-JEPA 2: self-supervised video world models.

Public API::

    import vjepa2
    encoder = vjepa2.load_encoder("vitl.pt")            # public checkpoint or transformers dir
    predictor = vjepa2.load_predictor("vitl.pt")
    feats = encoder(clip)                               # (B, 3, T, H, W) -> (B, N, D)
    vjepa2.save_transformers(encoder, predictor, "out/")
"""

from vjepa2.models import (EncoderConfig, Predictor, PredictorConfig, VisionEncoder, encoder_config,
                           predictor_config)
from vjepa2.weights import WeightsError, load_encoder, load_predictor, save_public, save_transformers

__version__ = "0.1.0"

__all__ = ["EncoderConfig", "Predictor", "PredictorConfig", "VisionEncoder", "WeightsError", "encoder_config",
           "load_encoder", "load_predictor", "predictor_config", "save_public", "save_transformers"]
