"""Model zoo: architectures split into Backbone and Upsampler stages (see ``base``)."""

from asisr.models.base import SRModel, load_state_dict_strict
from asisr.models.checkpoint import load, read_checkpoint, save, sha256_file
from asisr.models.descriptor import ModelDescriptor
from asisr.models.query import axis_coords, effective_scale, make_query
from asisr.models.registry import create, detect, list_models, register_detector, register_model

__all__ = [
    "SRModel", "ModelDescriptor", "create", "load", "detect", "list_models", "register_model",
    "register_detector", "read_checkpoint", "save", "sha256_file", "load_state_dict_strict", "make_query",
    "axis_coords", "effective_scale",
]
