"""wanforge: self-hosted Wan 2.2 image-to-video behind a WaveSpeed-compatible API."""

__version__ = "0.1.0"
