"""Face data: loaders for image folders and the named sets, identity splits, verification pairs, client shards."""
from fedface.data.dataset import FaceDataset
from fedface.data.images import CorruptImageError
from fedface.data.sources import KNOWN_DATASETS, load_faces, resolve_root

__all__ = ["CorruptImageError", "FaceDataset", "KNOWN_DATASETS", "load_faces", "resolve_root"]
