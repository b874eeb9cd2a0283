"""Video files through any upscaler: decode, colour conversion, upscale, encode and mux with PyAV (extra ``asisr[video]``)."""
