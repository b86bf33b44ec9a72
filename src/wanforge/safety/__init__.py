"""Content safety: a pluggable checker that scores images, and the frames of a video it looks at.

Cheap to import (no onnxruntime until a checker is built), so the API process may name the
configured checker without loading it.
"""
