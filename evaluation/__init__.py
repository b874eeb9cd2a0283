"""Evaluation: the protocol of ``shared/README.md`` (HR/LR pairs), PSNR/SSIM on Y, scale
equivariance (EQ), and reports."""

from asisr.evaluation.evaluate import (
    PROTOCOL,
    bicubic_upscale,
    check_output_path,
    evaluate,
    format_table,
    make_report,
    normalize_scales,
    preflight,
    scale_key,
    write_json,
)
from asisr.evaluation.equivariance import (
    DEFAULT_EQ_SCALES,
    EQ_PROTOCOL,
    add_eq_to_report,
    bicubic_downscale_float,
    equivariance,
    equivariance_image,
    format_eq_table,
    make_eq_report,
)
from asisr.evaluation.metrics import psnr_y, rgb_to_y, ssim_y
from asisr.evaluation.protocol import (
    IMAGE_EXTENSIONS,
    cropped_hr_size,
    list_images,
    load_image,
    lr_size,
    make_pair,
    shave_for,
)

__all__ = [
    "PROTOCOL", "IMAGE_EXTENSIONS", "evaluate", "bicubic_upscale", "format_table", "make_report",
    "write_json", "check_output_path", "normalize_scales", "preflight", "scale_key",
    "psnr_y", "ssim_y", "rgb_to_y", "make_pair", "list_images", "load_image", "lr_size",
    "cropped_hr_size", "shave_for",
    "equivariance", "equivariance_image", "format_eq_table", "add_eq_to_report", "make_eq_report",
    "bicubic_downscale_float", "DEFAULT_EQ_SCALES", "EQ_PROTOCOL",
]
