"""Models: the video encoder, the masked predictor and their configurations."""

from vjepa2.models.encoder import VisionEncoder
from vjepa2.models.predictor import Predictor
from vjepa2.models.sizes import SIZES, EncoderConfig, PredictorConfig, encoder_config, predictor_config

__all__ = ["SIZES", "EncoderConfig", "PredictorConfig", "Predictor", "VisionEncoder", "encoder_config",
           "predictor_config"]
