"""Work beyond one process: batch upscaling on Ray Data, online serving on Ray Serve (extra ``asisr[ray]``)."""
