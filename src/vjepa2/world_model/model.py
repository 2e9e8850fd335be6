"""A trained world model as planning uses it: the AC predictor with the frozen encoder it was
trained on (:class:`WorldModel`), loaded from a ``train-ac`` run by :func:`load_world_model`.
Planning imports this module, never the trainer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vjepa2.config import ConfigError, from_dict
from vjepa2.data.trajectories.lerobot import Streams
from vjepa2.files import run_kind
from vjepa2.models.ac_predictor import ACPredictor, normalize_latents
from vjepa2.models.encoder import VisionEncoder
from vjepa2.engine.checkpoint import CheckpointDir
from vjepa2.weights import METADATA_KEY, WeightsError, load_encoder
from vjepa2.world_model.config import ACEncoderConfig
from vjepa2.world_model.feature_cache import encode_frames, encoder_fingerprint
from vjepa2.world_model.ac_weights import load_ac_predictor


def frozen_encoder(cfg: ACEncoderConfig) -> VisionEncoder:
    """The encoder ``cfg.weights`` names (:func:`vjepa2.weights.load_encoder`), frozen, in eval mode."""
    try:
        return load_encoder(cfg.weights, seed=cfg.seed).requires_grad_(False)
    except WeightsError as err:
        raise ConfigError(f"encoder.weights: {err}") from None


@dataclass
class WorldModel:
    """A trained AC predictor with the frozen encoder it was trained on.

    ``encode(frames uint8 (T, H, W, 3)) -> (T, N, D)`` layer-normed latents, ready for
    :meth:`ACPredictor.rollout` (the planner's goal and observation embeddings).
    """

    encoder: VisionEncoder
    predictor: ACPredictor
    img_size: int
    checkpoint: Path
    fps: float | None = None
    streams: Streams = Streams()

    @torch.no_grad()
    def encode(self, frames, batch_size: int = 64, dtype: str = "fp32") -> torch.Tensor:
        device = next(self.predictor.parameters()).device
        return normalize_latents(encode_frames(self.encoder, frames, self.img_size, batch_size=batch_size,
                                               dtype=dtype, device=device).to(device))

    def to(self, device) -> WorldModel:
        self.encoder.to(device)
        self.predictor.to(device)
        return self


def load_world_model(path: str | Path) -> WorldModel:
    """Load a ``train-ac`` run directory (its newest valid checkpoint) or checkpoint file, with the
    encoder rebuilt from the recorded ``encoder`` settings (checked against the recorded fingerprint)."""
    path = Path(path)
    if path.is_dir():
        if run_kind(path) == "pretrain":
            raise WeightsError(f"{path} is a pretraining run, not a world model: give a train-ac run folder or "
                               f"checkpoint (its encoder goes to train-ac as encoder.weights=...)")
        found = CheckpointDir(path / "checkpoints").latest_valid(("predictor",))
        if found is None:
            raise WeightsError(f"{path}: no valid checkpoint under {path / 'checkpoints'}")
        path = found[0]
    predictor = load_ac_predictor(path)
    meta = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get(METADATA_KEY, {})
    if "encoder" not in meta:
        raise WeightsError(f"{path}: no encoder settings recorded (not written by train-ac); build the encoder "
                           f"yourself and wrap it in WorldModel(encoder, predictor, img_size, path)")
    enc_cfg = from_dict(ACEncoderConfig, meta["encoder"])
    encoder = frozen_encoder(enc_cfg)
    recorded = meta.get("encoder_fingerprint")
    if recorded and encoder_fingerprint(encoder, enc_cfg.img_size) != recorded:
        raise WeightsError(f"{path}: the encoder {enc_cfg.weights!r} is not the one this predictor was trained on "
                           f"(fingerprint differs); restore that encoder file")
    return WorldModel(encoder, predictor.eval(), enc_cfg.img_size, path, fps=meta.get("fps"),
                      streams=Streams(**meta.get("streams", {})))
