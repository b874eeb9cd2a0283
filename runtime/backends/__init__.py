"""Backends: one small module (or package) each, a loader and a runner behind ``asisr.runtime.runner.Runner``."""
