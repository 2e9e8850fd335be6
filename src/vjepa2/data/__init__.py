"""Data: video decoding and clip sampling, clip transforms."""

from vjepa2.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform, center_crop,
                                    normalize, random_resized_crop_box, resize_short_side, spatial_views)
from vjepa2.data.video import (IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, ClipInfo, VideoError, VideoReadError,
                               list_videos, read_clip, read_segments, segment_starts, write_video)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "ClipInfo", "EvalTransform",
           "TrainTransform", "VideoError", "VideoReadError", "center_crop", "list_videos", "normalize",
           "random_resized_crop_box", "read_clip", "read_segments", "resize_short_side", "segment_starts",
           "spatial_views", "write_video"]
