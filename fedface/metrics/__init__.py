"""Privacy metrics: image similarity of reconstructions to originals (``image``)."""
from fedface.metrics.image import PSNR_MAX, match, mean_face_floor, mse, psnr, score, ssim

__all__ = ["PSNR_MAX", "match", "mean_face_floor", "mse", "psnr", "score", "ssim"]
