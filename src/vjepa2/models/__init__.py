"""Models: the video encoder, the masked predictor, the action-conditioned predictor, the attentive
probe, and their configurations."""

from vjepa2.models.ac_predictor import ACPredictor, ACPredictorConfig, ac_predictor_config
from vjepa2.models.encoder import VisionEncoder
from vjepa2.models.predictor import Predictor
from vjepa2.models.attentive_probe import AttentiveProbe, ProbeConfig, probe_config
from vjepa2.models.sizes import SIZES, EncoderConfig, PredictorConfig, encoder_config, predictor_config

__all__ = ["ACPredictor", "ACPredictorConfig", "AttentiveProbe", "EncoderConfig", "Predictor", "PredictorConfig",
           "ProbeConfig", "SIZES", "VisionEncoder", "ac_predictor_config", "encoder_config", "predictor_config",
           "probe_config"]
