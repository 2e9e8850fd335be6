"""Data: video decoding and clip sampling, clip transforms, list files and mixtures, the synthetic
video generator, and the pretraining loader."""

from vjepa2.data.clips.dataset import (AugmentConfig, DataConfig, DataError, PretrainBatch, SourceConfig, SyntheticConfig,
                                       build_pretrain_loader)
from vjepa2.data.clips.lists import ListError, Mixture, VideoEntry, VideoSource, read_folder, read_list, read_video_source
from vjepa2.data.clips.synthetic import (Background, Motion, Scene, SceneObject, SyntheticVideos, make_object, render,
                                         sample_background, sample_scene)
from vjepa2.data.clips.transforms import (IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform, center_crop,
                                          normalize, random_resized_crop_box, resize_short_side, spatial_views)
from vjepa2.data.clips.video import (IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, ClipInfo, VideoError, VideoReadError,
                                     list_videos, read_clip, read_segments, segment_starts, write_video)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "AugmentConfig", "Background",
           "ClipInfo", "DataConfig", "DataError", "EvalTransform", "ListError", "Mixture", "Motion", "PretrainBatch",
           "Scene", "SceneObject", "SourceConfig", "SyntheticConfig", "SyntheticVideos", "TrainTransform",
           "VideoEntry", "VideoError", "VideoReadError", "VideoSource", "build_pretrain_loader", "center_crop",
           "list_videos", "make_object", "normalize", "random_resized_crop_box", "read_clip", "read_folder",
           "read_list", "read_segments", "read_video_source", "render", "resize_short_side", "sample_background",
           "sample_scene", "segment_starts", "spatial_views", "write_video"]
