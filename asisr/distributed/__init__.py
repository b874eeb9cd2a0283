"""asisr on Ray: folder runs on Ray Data (``batch``), an HTTP service on Ray Serve (``serve``).

Ray is an optional extra (``asisr[ray]``): nothing here imports it at module level, so the
base install and the command-line start-up never load it.
"""
