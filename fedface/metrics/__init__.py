"""Privacy metrics: image similarity of reconstructions to originals (``image``), identity leak -- COS under an
independent face model, SRRA, attack top-1 (``identity``) -- and paper 001's normalised scores (``scores``)."""
from fedface.metrics.image import PSNR_MAX, match, mean_face_floor, mse, psnr, score, ssim

__all__ = ["PSNR_MAX", "match", "mean_face_floor", "mse", "psnr", "score", "ssim"]
